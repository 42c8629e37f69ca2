"""The shop's Russian texts (Telegram Stars): packs, invoices, payments, refunds, grants,
the terms and the console's simulated shop. The rest of the bot's texts are in `texts.py`."""

from __future__ import annotations

# Shop (Telegram Stars). Refusal keys are producer.shop.Refusal values.


SHOP_BUTTON = "💳 Купить"
SHOP_CLOSED = "Магазин сейчас закрыт. Загляни позже."
SHOP_UNAVAILABLE = "Магазин временно недоступен. Попробуй через минуту."
PACK_GONE = "Этого пакета больше нет в продаже. Актуальные пакеты: /shop"
PACK_GONE_SHORT = "Этого пакета больше нет"
INVOICE_ALREADY_SENT = "Счёт уже отправлен — он выше в чате"
CHECKOUT_REFUSALS = {
    "unknown_order": "Заказ не найден. Открой /shop и выбери пакет заново.",
    "foreign_order": "Этот счёт выставлен другому пользователю. Открой /shop, чтобы купить себе.",
    "already_paid": "Этот заказ уже оплачен. Новый пакет можно выбрать в /shop.",
    "price_mismatch": "Цена изменилась. Открой /shop и выбери пакет заново.",
    "unavailable": "Магазин временно недоступен, звёзды не списаны. Попробуй через минуту.",
}
PAYMENT_DELAYED = (
    "Оплата получена ⭐ Из-за временного сбоя покупку начислим чуть позже. "
    "Звёзды не пропадут — мы напишем, как только всё будет готово."
)
PAYMENT_WITHOUT_ORDER = (
    "Оплата получена, но заказ не найден. Напиши в поддержку (/paysupport) — мы всё проверим."
)
TERMS = (
    "Условия покупок:\n"
    "• Алмазы 💎 и энергия ⚡ — внутренняя валюта бота: они тратятся на сообщения и фото "
    "и не обмениваются на деньги.\n"
    "• Оплата — только Telegram Stars ⭐. Покупка начисляется сразу после оплаты.\n"
    "• Если покупка не начислилась или что-то пошло не так, напиши /paysupport: мы проверим "
    "платёж и вернём звёзды, если покупку не удалось получить.\n"
    "• При возврате звёзд начисленное списывается с баланса (если уже потрачено — "
    "баланс обнуляется).\n"
    "• Бесплатная энергия раз в день не гарантируется и может меняться."
)
REFUND_USAGE = "Использование: /refund <telegram_payment_charge_id>"
GRANT_USAGE = "Использование: /grant <user_id> <количество> <energy|diamonds>"
GRANT_UNKNOWN_USER = "Такого пользователя нет: он ещё ни разу не писал боту."


def _diamonds_word(count: int) -> str:
    if count % 10 == 1 and count % 100 != 11:
        return "алмаз"
    if 2 <= count % 10 <= 4 and not 12 <= count % 100 <= 14:
        return "алмаза"
    return "алмазов"


def amount_text(currency: str, amount: int) -> str:
    if currency == "energy":
        return f"{amount} ⚡ энергии"
    return f"{amount} 💎 {_diamonds_word(amount)}"


def pack_button(currency: str, amount: int, price: int) -> str:
    return f"{amount_text(currency, amount)} — {price} ⭐"


def shop_intro(lines: list[str]) -> str:
    return "Магазин. Оплата — Telegram Stars ⭐.\n" + "\n".join(f"• {line}" for line in lines)


def invoice_title(currency: str, amount: int) -> str:
    noun = "энергии" if currency == "energy" else _diamonds_word(amount)
    return f"{amount} {noun}"


def invoice_description(currency: str, amount: int) -> str:
    use = "для сообщений персонажам" if currency == "energy" else "для фото персонажей"
    return f"{amount_text(currency, amount)} {use}. Начисляются сразу после оплаты."


def payment_done(currency: str, amount: int, balance_now: int) -> str:
    return (
        f"Оплата прошла, спасибо! Начислено {amount_text(currency, amount)}. "
        f"Теперь у тебя {amount_text(currency, balance_now)}."
    )


def refund_notice(currency: str, taken: int, balance_now: int) -> str:
    return (
        f"Звёзды за покупку возвращены. С баланса списано {amount_text(currency, taken)}, "
        f"осталось {amount_text(currency, balance_now)}."
    )


def paysupport(contact: str, payments: list[tuple[str, str, int]]) -> str:
    """`payments`: (date, charge id, Stars) of the user's latest payments."""
    whom = contact or "администратору бота"
    lines = [
        "Помощь с оплатой. Если покупка не начислилась или нужен возврат звёзд, "
        f"напиши {whom} и укажи номер платежа.",
        "Условия покупок: /terms",
    ]
    if payments:
        lines.append("Твои последние платежи:")
        lines += [f"• {day}: {stars} ⭐, номер {charge}" for day, charge, stars in payments]
    return "\n".join(lines)


def refund_unknown(charge_id: str) -> str:
    return f"Платёж {charge_id} не найден в нашей базе."


REFUND_SPOOLED = (
    "Звёзды возвращены, но база данных сейчас недоступна: списание записано в журнал "
    "платежей и будет применено, как только она вернётся."
)


def refund_lookup_failed(error: str) -> str:
    return f"Платежа нет в нашей базе, а Telegram не ответил на запрос списка платежей: {error}"


def refund_unrecorded(user_id: int, already: bool) -> str:
    done = "уже были возвращены" if already else "возвращены"
    return (
        f"Платежа не было в нашей базе, но Telegram его знает: звёзды {done} пользователю "
        f"{user_id}. Платёж записан как возвращённый; покупка не начислялась, баланс не изменён."
    )


def refund_refused(error: str) -> str:
    return f"Telegram не вернул звёзды: {error}"


def refund_report(status: str, user_id: int | None, currency: str, taken: int, short: int) -> str:
    if status == "already_refunded":
        return f"Этот платёж уже возвращён (пользователь {user_id}); ничего не списано повторно."
    if status == "nothing_credited":
        return f"Звёзды возвращены пользователю {user_id}; по платежу ничего не начислялось."
    text = f"Звёзды возвращены пользователю {user_id}. Списано {amount_text(currency, taken)}."
    if short:
        text += f" Не хватило {amount_text(currency, short)}: уже потрачено, баланс обнулён."
    return text


def grant_done(user_id: int, currency: str, amount: int, balance_now: int, repeated: bool) -> str:
    if repeated:
        now = amount_text(currency, balance_now)
        return f"Эта выдача уже сделана. У пользователя {user_id}: {now}."
    return (
        f"Выдано {amount_text(currency, amount)} пользователю {user_id}. "
        f"Теперь у него {amount_text(currency, balance_now)}."
    )


def grant_notice(currency: str, amount: int, balance_now: int) -> str:
    return (
        f"Подарок от администратора: {amount_text(currency, amount)}! "
        f"Теперь у тебя {amount_text(currency, balance_now)}."
    )


# The console's shop: payments there are simulated, and say so.

CONSOLE_SHOP_HINT = f"   [{SHOP_BUTTON}: /shop]"
CONSOLE_BUY_USAGE = "Напиши /buy <пакет>, например /buy d10."
CONSOLE_TEST_PAYMENT = (
    "🧪 ТЕСТОВАЯ ОПЛАТА: консольный режим, Telegram не участвует и звёзды не списываются."
)


def console_shop(items: list[tuple[str, str]]) -> str:
    """`items`: (pack id, button text)."""
    lines = [
        "Магазин (консоль: оплата симулируется, это тест).",
        *[f"• {text}: /buy {pack_id}" for pack_id, text in items],
    ]
    return "\n".join(lines)


TERMS_ADULT = (
    "\n\nПерсонажи 18+:\n"
    "• Перед тем как показать персонажей для взрослых, бот спрашивает, есть ли тебе 18 лет, "
    "и запоминает ответ. Пока возраст не подтверждён, такие персонажи не показываются и не "
    "выбираются.\n"
    "• Изменить ответ: /adult."
)
TERMS += TERMS_ADULT
