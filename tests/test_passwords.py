"""Passwords: encodings, complement, digit targets, drawing constraints, passphrases, secrecy."""
import pickle

import pytest
import torch

from models.passwords import (
    Password,
    bits_from_int,
    complement,
    digits,
    draw_step_passwords,
    encode,
    int_from_bits,
    password_from_text,
    read_passphrase,
)

BITS = torch.tensor([[1, 0, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1]], dtype=torch.uint8)  # 0xA3F1


def test_bits_are_most_significant_first():
    assert torch.equal(bits_from_int(0xA3F1, 16), BITS[0])
    assert int_from_bits(BITS[0]) == 0xA3F1


@pytest.mark.parametrize("mode,one,zero", [("half", 0.5, -0.5), ("one_fourth", 0.25, -0.25), ("true", 1.0, -1.0)])
def test_encodings(mode, one, zero):
    v = encode(BITS, mode)
    assert torch.equal(v, torch.where(BITS.bool(), torch.tensor(one), torch.tensor(zero)))
    # the recovery password's vector is exactly the negation of the password's
    assert torch.equal(encode(complement(BITS), mode), -v)


def test_complement_is_two_to_the_l_minus_one_minus_p():
    assert int_from_bits(complement(BITS)[0]) == 2 ** 16 - 1 - 0xA3F1


def test_digit_targets():
    assert digits(BITS).tolist() == [[0xA, 0x3, 0xF, 0x1]]
    long = torch.cat([BITS, complement(BITS)], 1)
    assert digits(long).tolist() == [[0xA, 0x3, 0xF, 0x1, 0x5, 0xC, 0x0, 0xE]]


def test_step_passwords_respect_the_constraints():
    # 4-bit codes make collisions frequent, so the redraw logic is exercised
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        pw = draw_step_passwords(64, 4, g)
        same = lambda a, b: (a == b).all(1)  # noqa: E731
        assert not same(pw.p, pw.p2).any()
        assert torch.equal(pw.inv, 1 - pw.p)
        assert not same(pw.w1, pw.inv).any() and not same(pw.w2, pw.inv).any() and not same(pw.w2, pw.w1).any()


def test_near_wrong_passwords_are_the_recovery_password_with_one_to_all_bits_flipped():
    g = torch.Generator().manual_seed(0)
    plain = draw_step_passwords(4000, 16, torch.Generator().manual_seed(2))
    pw = draw_step_passwords(4000, 16, g, near_wrong=True)
    same = lambda a, b: (a == b).all(1)  # noqa: E731
    assert not same(pw.p, pw.p2).any() and torch.equal(pw.inv, 1 - pw.p)
    assert not same(pw.w2, pw.inv).any() and not same(pw.w2, pw.w1).any()
    flipped = (pw.w1 != pw.inv).sum(1)
    counts = torch.bincount(flipped, minlength=17)
    assert counts[0] == 0 and (counts[1:] > 4000 / 16 * 0.7).all()  # every distance 1..16, about equally
    assert ((pw.w1.float().mean(0) - 0.5).abs() < 0.05).all()  # no bit position favoured
    # the paper's uniform draw puts most wrong passwords near L/2 bits away, few within 2
    assert ((plain.w1 != plain.inv).sum(1) <= 2).float().mean() < 0.01 < (flipped <= 2).float().mean() - 0.1
    # p and p2 are drawn as without the option; only w1, and w2 drawn after it, differ
    g2 = torch.Generator().manual_seed(0)
    off = draw_step_passwords(4000, 16, g2)
    assert torch.equal(off.p, pw.p) and torch.equal(off.p2, pw.p2)


def test_drawing_is_uniform_enough():
    pw = draw_step_passwords(4000, 16, torch.Generator().manual_seed(1))
    mean = pw.p.float().mean(0)
    assert ((mean - 0.5).abs() < 0.05).all()


@pytest.mark.parametrize("length", [16, 32, 64])
def test_passphrase_gives_the_right_number_of_bits_deterministically(length):
    a = Password.from_passphrase("correct horse battery staple", length)
    b = Password.from_passphrase("correct horse battery staple", length)
    assert a == b and a.length == length
    assert a.bits().shape == (1, length)


def test_different_passphrases_give_different_codes():
    codes = {Password.from_passphrase(f"phrase {i}", 32) for i in range(20)}
    assert len(codes) == 20
    assert Password.from_passphrase("x", 16) != Password.from_passphrase("y", 16)


def test_same_passphrase_other_length_is_independent():
    a = Password.from_passphrase("hunter2", 16).bits()[0]
    b = Password.from_passphrase("hunter2", 32).bits()[0]
    assert not torch.equal(a, b[:16])


def test_explicit_codes():
    assert Password.from_code(0xA3F1, 16) == Password.from_code("0xa3f1", 16) == Password.from_code("41969", 16)
    assert torch.equal(Password.from_code(0xA3F1).bits(), BITS)
    assert password_from_text("code:0xA3F1", 16) == Password.from_code(0xA3F1)
    for bad in (2 ** 16, -1, "0xZZ", "twelve"):
        with pytest.raises(ValueError):
            Password.from_code(bad, 16)
    with pytest.raises(ValueError, match="multiple of 4"):
        Password.from_passphrase("x", 10)


def test_inverse_is_the_complement():
    p = Password.from_code(0xA3F1)
    assert torch.equal(p.inverse().bits(), complement(BITS))
    assert torch.equal(p.inverse().vector("half"), -p.vector("half"))


def test_password_never_shows_or_pickles_its_value():
    p = Password.from_code(0xA3F1)
    for text in (repr(p), str(p), f"{p}", "%s" % p):  # noqa: UP031 (%-formatting is one of the ways checked)
        assert "a3f1" not in text.lower() and "41969" not in text and "1010" not in text
        assert "hidden" in text
    with pytest.raises(TypeError):
        pickle.dumps(p)
    with pytest.raises(TypeError):
        torch.save(p, "/dev/null")


def test_read_passphrase_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("FIT_TEST_PW", "from env")
    assert read_passphrase(env="FIT_TEST_PW") == "from env"
    f = tmp_path / "pw.txt"
    f.write_text("from file\nsecond line ignored\n")
    assert read_passphrase(file=str(f)) == "from file"
    with pytest.raises(ValueError, match="not set"):
        read_passphrase(env="FIT_TEST_PW_MISSING")
    (tmp_path / "empty").write_text("")
    with pytest.raises(ValueError, match="empty"):
        read_passphrase(file=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="not both"):
        read_passphrase(env="FIT_TEST_PW", file=str(f))
