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
    "stop": "Остановить ответ, который пишется",
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
COMMANDS.update(
    {
        "shop": "Купить алмазы и энергию",
        "paysupport": "Помощь с оплатой",
        "terms": "Условия покупок",
    }
)

# Streaming replies and stopping them.
STOP_BUTTON = "⏹ Стоп"
STOPPED_MARK = "⏹ Остановлено"
CUT_MARK = "✂️ Ответ оборвался"
REPLY_STOPPED_REFUNDED = "Ответ остановлен. Энергия за это сообщение возвращена."
STOPPING = "Останавливаю ответ…"
NOTHING_TO_STOP = "Сейчас нечего останавливать: ответ уже готов."
STOP_UNAVAILABLE = "Не получилось остановить ответ: сервис временно недоступен."
STOP_NOT_YOURS = "Остановить ответ может только тот, кто его попросил."
IMAGE_FAILED = "Не получилось сгенерировать фото. Алмазы за него возвращены."
RESET_DONE = "Начинаем с чистого листа! Диалог с {name} начат заново."
DELETE_QUESTION = (
    "Удалить все твои диалоги и сообщения? Это нельзя отменить. "
    "Баланс энергии и алмазов сохранится."
)
DELETE_DONE = "Готово: твои диалоги и сообщения удалены."
DELETE_CANCELLED = "Хорошо, ничего не удаляю."
UNEXPECTED_ERROR = "Что-то пошло не так. Попробуй ещё раз чуть позже."
# Answers to a button press that does nothing (shown over the chat, not sent to it).
BUTTON_OUTDATED = "Эта кнопка больше не работает. Список команд: /help"
NOT_YOUR_BUTTON = "Эта кнопка не для тебя: её нажимает тот, кому она адресована."
UNKNOWN_COMMAND = "Не знаю такой команды. Список команд: /help"
NOT_TEXT = "Я понимаю текстовые и голосовые сообщения."
QUEUE_EMPTY = "нет"

HELP = (
    "Как это работает:\n"
    "• /characters — выбери персонажа и просто пиши ему сообщения.\n"
    "• Каждое сообщение стоит {energy} ⚡ энергии.\n"
    "• Кнопка «📷 Получить фото» под ответом — фото по мотивам разговора "
    "за {diamonds} 💎.\n"
    "• /generate <описание> — фото персонажа по твоему описанию за {diamonds} 💎.\n"
    "• /balance — баланс, /reset — начать диалог заново.\n"
    "• /stop — остановить ответ, пока он пишется.\n"
    "• Под последним ответом: 🔄 — ответить заново, ▶️ — продолжить оборванный ответ. "
    "Можно исправить своё последнее сообщение — персонаж ответит на новый текст. "
    "/undo — убрать последний обмен сообщениями.\n"
    "• /memory — что персонаж помнит о разговоре, /dialogs — прежние диалоги.\n"
    "• Голосовые сообщения персонаж слушает, как текст; 🔊 под ответом — озвучить его за 💎.\n"
    "• /shop — купить алмазы и энергию за Telegram Stars; /paysupport, /terms.\n"
    "• /privacy — какие данные хранятся, /delete_me — удалить их."
)

PRIVACY = (
    "Что мы храним:\n"
    "• твой Telegram id, имя и язык — чтобы узнавать тебя;\n"
    "• диалоги с персонажами и тексты сообщений — чтобы персонаж помнил разговор;\n"
    "• баланс энергии и алмазов и историю списаний.\n"
    "Сгенерированные фото не сохраняются: они только отправляются тебе.\n"
    "Голосовые сообщения хранятся только до расшифровки, в диалоге остаётся их текст.\n"
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
    "/generate <описание>, /balance, /shop, /characters, /reset, /help, /privacy, /delete_me, "
    "/quit. Ctrl-C, пока пишется ответ, останавливает его."
)
CONSOLE_PHOTO_HINT = f"   [{PHOTO_BUTTON}: /photo]"
CONSOLE_CONFIRM_HINT = "Напиши «да», чтобы подтвердить."
CONSOLE_YES = frozenset({"да", "yes", "y", "д"})
CONSOLE_PROMPT = "вы> "


def marked_reply(text: str, stopped: bool, cut: bool) -> str:
    """A final reply, marked when the user stopped it or its stream broke off."""
    mark = STOPPED_MARK if stopped else CUT_MARK if cut else ""
    if not mark:
        return text
    return f"{text.rstrip()}\n\n{mark}" if text.strip() else mark


def console_message(text: str) -> str:
    return f"бот> {text}"


def console_photo(path: str) -> str:
    return f"бот> 📷 фото: {path}"


def console_characters(names: list[str]) -> str:
    lines = [CHOOSE_CHARACTER] + [f"{number}. {name}" for number, name in enumerate(names, 1)]
    lines.append("Напиши номер персонажа.")
    return "\n".join(lines)


# Long-term memory (/memory).

COMMANDS.update({"memory": "Что помнит персонаж"})
MEMORY_CLEAR_BUTTON = "🧹 Забыть"
MEMORY_CLEARED = "Готово: память очищена. Последние сообщения персонаж всё ещё видит."


def memory_empty(name: str, window: int) -> str:
    return (
        f"В долгой памяти персонажа {name} пока пусто: она появляется, когда разговор "
        f"становится длиннее {window} сообщений."
    )


def memory_text(name: str, summary: str) -> str:
    return f"Что {name} помнит о вашем разговоре:\n\n{summary}"


# Steering a conversation: the reply asked again (🔄) or continued (▶️), /undo.

REGENERATE_BUTTON = "🔄 Ещё раз"
CONTINUE_BUTTON = "▶️ Продолжить"
REGENERATING = "Пишу ответ заново…"
CONTINUING = "Продолжаю…"
STEERING_ALREADY = "Уже пишу, подожди немного."
TOO_LATE = "Поздно: это уже не последний ответ в диалоге."
COMMANDS.update({"undo": "Отменить последний обмен сообщениями"})
UNDO_DONE = "Последний обмен сообщениями удалён: персонаж его больше не видит."
UNDO_NOTHING = "Отменять нечего: в этом диалоге ещё нет сообщений."
UNDO_BUSY = "Ответ ещё пишется: дождись его или останови (/stop), потом отменяй."

# Past dialogs (/dialogs).

COMMANDS.update({"dialogs": "Мои диалоги: продолжить прежний"})
DIALOGS_EMPTY = "Диалогов пока нет. Выбери персонажа: /characters"
DIALOGS_TITLE = "Твои диалоги (нажми, чтобы продолжить):"
DIALOG_NOT_STARTED = "ещё не начат"


def dialog_line(
    number: int, name: str, day: str, *, first_words: str | None, photos: int, active: bool
) -> str:
    words = f"«{first_words}»" if first_words else DIALOG_NOT_STARTED
    now = " — сейчас" if active else ""
    return f"{number}. {name} · {day} · {words} · 📷 {photos}{now}"


def dialog_button(number: int, name: str) -> str:
    return f"{number}. {name}"


def dialog_resumed(name: str) -> str:
    return f"Продолжаем диалог с {name}. Напиши что-нибудь!"


# Characters from cards, the list's pages and the 18+ question.

COMMANDS.update({"adult": "Персонажи 18+: подтвердить возраст"})
PREVIOUS_PAGE_BUTTON = "←"
NEXT_PAGE_BUTTON = "→"
ADULT_QUESTION = (
    "Среди персонажей есть персонажи для взрослых (18+). Они показываются только тем, "
    "кому уже исполнилось 18 лет. Тебе есть 18?"
)
ADULT_YES_BUTTON = "Да, мне есть 18"
ADULT_NO_BUTTON = "Нет"
ADULT_CONFIRMED = "Спасибо! Теперь в списке есть и персонажи 18+."
ADULT_DECLINED = "Хорошо, персонажей 18+ в списке не будет. Передумаешь — отправь /adult."
ADULT_ONLY = "Этот персонаж только для взрослых. Подтвердить возраст: /adult"
NO_ADULT_CHARACTERS = "Персонажей 18+ сейчас нет."
CARD_NOT_A_CARD = "Это не карточка персонажа: пришли PNG или JSON-файл карточки."
CARD_TOO_BIG = "Файл слишком большой для карточки персонажа."


def card_imported(name: str, created: bool, adult: bool, avatar: bool) -> str:
    what = "добавлен" if created else "обновлён"
    notes = [note for note, on in (("18+", adult), ("с аватаром", avatar)) if on]
    extra = f" ({', '.join(notes)})" if notes else ""
    return f"Персонаж «{name}» {what}{extra}."


def card_refused(reason: str) -> str:
    return f"Карточку не удалось загрузить: {reason}"


# Voice in (voice messages) and out (🔊 under a reply).
VOICE_BUTTON = "🔊"
VOICE_FAILED = "Не получилось разобрать голосовое сообщение. Энергия за него возвращена."
VOICE_OUT_FAILED = "Не получилось озвучить ответ. Алмазы за это возвращены."
VOICE_OUT_STARTED = "Озвучиваю…"
VOICE_OUT_ALREADY = "Уже озвучиваю этот ответ."
VOICE_UNAVAILABLE = "Не получилось получить голосовое сообщение. Попробуй ещё раз."
_HEARD_CHARS = 1000


def voice_too_long(limit_seconds: int) -> str:
    return f"Голосовое слишком длинное: я слушаю до {limit_seconds} секунд. Ничего не списано."


def voice_too_big(limit_bytes: int) -> str:
    size = f"{limit_bytes / 1_000_000:.1f}".rstrip("0").rstrip(".")
    return f"Голосовое слишком большое: до {size} МБ. Ничего не списано."


def console_voice(path: str) -> str:
    return f"🔊 Голосовое сохранено: {path}"


def heard(transcript: str) -> str:
    """What was understood, shown before the reply to it."""
    shown = transcript if len(transcript) <= _HEARD_CHARS else transcript[:_HEARD_CHARS] + "…"
    return f"🎤 «{shown}»"
