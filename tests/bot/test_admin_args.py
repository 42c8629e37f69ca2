"""The admin commands' arguments: plain ASCII numbers in range, one printable charge id."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from db.models import Currency
from producer.admin_args import MAX_USER_ID, parse_charge_id, parse_grant, parse_number
from shared.shop_packs import MAX_PACK_AMOUNT


@pytest.mark.parametrize(
    "token",
    ["١٢٣", "²", "+5", "-5", " 5", "5 ", "1e3", "5_0", "0x10", "５", "", "12345678901234567890"],
)
def test_anything_but_plain_ascii_digits_is_refused(token: str) -> None:
    assert parse_number(token, 0, MAX_USER_ID) is None


def test_numbers_are_kept_in_range() -> None:
    assert parse_number("007", 1, 10) == 7
    assert parse_number("0", 1, 10) is None
    assert parse_number("11", 1, 10) is None
    assert parse_number(str(MAX_USER_ID), 1, MAX_USER_ID) == MAX_USER_ID
    assert parse_number(str(MAX_USER_ID + 1), 1, MAX_USER_ID) is None
    assert parse_number("1" * 20, 1, 10**30) is None  # longer than any BIGINT


@given(st.text(max_size=40))
def test_grant_parsing_never_raises_and_accepts_only_the_plain_form(args: str) -> None:
    parsed = parse_grant(args)
    if parsed is None:
        return
    user_id, amount, currency = parsed
    tokens = [part for part in args.split(" ") if part]
    assert all(ch in "0123456789" for ch in tokens[0] + tokens[1])
    assert (int(tokens[0]), int(tokens[1]), tokens[2]) == (user_id, amount, currency.value)
    assert 1 <= user_id <= MAX_USER_ID
    assert 1 <= amount <= MAX_PACK_AMOUNT


@given(st.integers(1, MAX_USER_ID), st.integers(1, MAX_PACK_AMOUNT), st.sampled_from(Currency))
def test_every_plain_grant_is_read_back(user_id: int, amount: int, currency: Currency) -> None:
    assert parse_grant(f"{user_id} {amount} {currency.value}") == (user_id, amount, currency)


@given(st.text(max_size=300))
def test_a_charge_id_is_one_token_of_printable_ascii(args: str) -> None:
    charge_id = parse_charge_id(args)
    if charge_id is not None:
        assert charge_id == args.strip(" ")
        assert 1 <= len(charge_id) <= 255
        assert all("!" <= ch <= "~" for ch in charge_id)
