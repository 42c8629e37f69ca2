"""Every text the bot shows its users (Russian), in one place."""

from __future__ import annotations

from shared.errors import InsufficientBalanceError
from shared.queue import QueueDepth

PHOTO_BUTTON = "📷 Получить фото"
DELETE_CONFIRM_BUTTON = "Да, удалить"
DELETE_CANCEL_BUTTON = "Отмена"

# The command menu (setMyCommands): command -> description.
COMMANDS = {
    "start": "Начать и выбрать персонажа",
    "characters": "Сменить персонажа",
    "generate": "Сгенерировать фото по описанию",
    "balance": "Мой баланс",
    "reset": "Начать диалог заново",
    "help": "Как пользоваться ботом",
    "privacy": "Какие данные хранятся",
    "delete_me": "Удалить мои данные",
}

NO_CHARACTERS = "Персонажи пока не добавлены. Загляни чуть позже."
CHOOSE_CHARACTER = "Выбери, с кем хочешь пообщаться:"
NO_DIALOG = "Сначала выбери персонажа: /characters"
UNKNOWN_CHARACTER = "Такого персонажа нет. Посмотри список: /characters"
THROTTLED = "Ты пишешь слишком часто. Подожди минутку и попробуй снова."
GENERATE_USAGE = (
    "Напиши, что сгенерировать, после команды.\nНапример: /generate в летнем платье на пляже"
)
PHOTO_IN_PROGRESS = "Фото уже готовится, подожди немного 🙂"
EMPTY_REPLY = "…"
TAKES_LONGER = "Ответ готовится дольше обычного. Я пришлю его, как только он будет готов."
ENQUEUE_FAILED = (
    "Не получилось отправить запрос: сервис временно недоступен. "
    "Списание отменено, попробуй ещё раз чуть позже."
)
REPLY_FAILED = "Не получилось получить ответ. Энергия за это сообщение возвращена."
IMAGE_FAILED = "Не получилось сгенерировать фото. Алмазы за него возвращены."
RESET_DONE = "Начинаем с чистого листа! Диалог с {name} начат заново."
DELETE_QUESTION = (
    "Удалить все твои диалоги и сообщения? Это нельзя отменить. "
    "Баланс энергии и алмазов сохранится."
)
DELETE_DONE = "Готово: твои диалоги и сообщения удалены."
DELETE_CANCELLED = "Хорошо, ничего не удаляю."
UNEXPECTED_ERROR = "Что-то пошло не так. Попробуй ещё раз чуть позже."
UNKNOWN_COMMAND = "Не знаю такой команды. Список команд: /help"
NOT_TEXT = "Я понимаю только текстовые сообщения."
QUEUE_EMPTY = "нет"

HELP = (
    "Как это работает:\n"
    "• /characters — выбери персонажа и просто пиши ему сообщения.\n"
    "• Каждое сообщение стоит {energy} ⚡ энергии.\n"
    "• Кнопка «📷 Получить фото» под ответом — фото по мотивам разговора "
    "за {diamonds} 💎.\n"
    "• /generate <описание> — фото персонажа по твоему описанию за {diamonds} 💎.\n"
    "• /balance — баланс, /reset — начать диалог заново.\n"
    "• /privacy — какие данные хранятся, /delete_me — удалить их."
)

PRIVACY = (
    "Что мы храним:\n"
    "• твой Telegram id, имя и язык — чтобы узнавать тебя;\n"
    "• диалоги с персонажами и тексты сообщений — чтобы персонаж помнил разговор;\n"
    "• баланс энергии и алмазов и историю списаний.\n"
    "Сгенерированные фото не сохраняются: они только отправляются тебе.\n"
    "Чтобы удалить диалоги и сообщения, отправь /delete_me."
)


def greeting(name: str, energy: int, diamonds: int) -> str:
    return (
        f"Привет, {name}! Здесь можно переписываться с персонажами и получать их фото.\n"
        f"Твой баланс: {energy} ⚡ энергии и {diamonds} 💎 алмазов."
    )


def character_chosen(name: str, description: str) -> str:
    return f"Твой собеседник — {name}.\n{description}\n\nНапиши что-нибудь, чтобы начать!"


def balance(energy: int, diamonds: int) -> str:
    return f"Твой баланс: {energy} ⚡ энергии и {diamonds} 💎 алмазов."


def help_text(energy_cost: int, diamond_cost: int) -> str:
    return HELP.format(energy=energy_cost, diamonds=diamond_cost)


def reset_done(name: str) -> str:
    return RESET_DONE.format(name=name)


def message_too_long(limit: int) -> str:
    return f"Сообщение слишком длинное: не больше {limit} символов."


def prompt_too_long(limit: int) -> str:
    return f"Описание слишком длинное: не больше {limit} символов."


def queue_place(place: int) -> str:
    return f"Сейчас много желающих: твоё место в очереди — {place}."


def not_enough(currency: str, balance_now: int, cost: int) -> str:
    if currency == "energy":
        return (
            f"Не хватает энергии: нужно {cost} ⚡, у тебя {balance_now} ⚡. "
            "Проверить баланс: /balance"
        )
    return (
        f"Не хватает алмазов: нужно {cost} 💎, у тебя {balance_now} 💎. Проверить баланс: /balance"
    )


def error_text(exc: BaseException) -> str:
    """What the user reads when a use case stops on an expected error."""
    if isinstance(exc, InsufficientBalanceError):
        return not_enough(exc.currency, exc.balance, exc.cost)
    return UNEXPECTED_ERROR


def _age(seconds: float | None) -> str:
    if seconds is None:
        return QUEUE_EMPTY
    return f"{seconds:.0f} с"


def queue_report(depths: list[QueueDepth]) -> str:
    lines = ["Очереди (ждут / в работе / в dead-letter / самая старая ждёт):"]
    lines += [
        f"• {d.task_type}: {d.waiting} / {d.in_flight} / {d.dead} / "
        f"{_age(d.oldest_waiting_seconds)}"
        for d in depths
    ]
    return "\n".join(lines)


# Console mode (python -m producer --console).

CONSOLE_USER_NAME = "Гость"
CONSOLE_INTRO = (
    "Консольный чат. Команды: /start, номер персонажа, любой текст, /photo, "
    "/generate <описание>, /balance, /characters, /reset, /help, /privacy, /delete_me, /quit."
)
CONSOLE_PHOTO_HINT = f"   [{PHOTO_BUTTON}: /photo]"
CONSOLE_CONFIRM_HINT = "Напиши «да», чтобы подтвердить."
CONSOLE_YES = frozenset({"да", "yes", "y", "д"})
CONSOLE_PROMPT = "вы> "


def console_message(text: str) -> str:
    return f"бот> {text}"


def console_photo(path: str) -> str:
    return f"бот> 📷 фото: {path}"


def console_characters(names: list[str]) -> str:
    lines = [CHOOSE_CHARACTER] + [f"{number}. {name}" for number, name in enumerate(names, 1)]
    lines.append("Напиши номер персонажа.")
    return "\n".join(lines)
