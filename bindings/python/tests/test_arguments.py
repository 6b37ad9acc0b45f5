"""Every argument is checked against its WIT type's range before the
component runs: a bad one raises ``UsageError`` (the CLI's kind ``usage``,
exit 2) with the CLI's wording, and nothing is written."""

import datetime
import math
import os
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import handoff

U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1

# The component runs once per example: keep the counts modest, and keep no
# example database in the working tree.
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def tree(root):
    """Every path under ``root``, to show a failed call wrote nothing."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        found += [os.path.join(dirpath, n) for n in dirnames + filenames]
    return sorted(found)


def usage(call, message):
    with pytest.raises(handoff.UsageError) as caught:
        call()
    error = caught.value
    assert str(error) == message
    assert (error.kind, error.exit_code, error.path, error.retryable) == ("usage", 2, None, False)
    assert isinstance(error, ValueError) and isinstance(error, TypeError)
    return error


def test_keep_is_a_u32_of_at_least_one_and_a_refused_keep_removes_nothing(root, src):
    for step in (1, 2, 3, 4):
        handoff.publish(root, step, src)
    before = tree(root)
    for keep, why in [
        (2**32 + 1, f"{2**32 + 1} is not in 1..={U32_MAX}"),
        (2**32, f"{2**32} is not in 1..={U32_MAX}"),
        (0, f"0 is not in 1..={U32_MAX}"),
        (-1, f"-1 is not in 1..={U32_MAX}"),
        (True, f"expected an integer in 1..={U32_MAX}, got bool"),
        (2.0, f"expected an integer in 1..={U32_MAX}, got float"),
        ("2", f"expected an integer in 1..={U32_MAX}, got str"),
    ]:
        usage(lambda: handoff.gc(root, keep), f"invalid value {keep!r} for keep: {why}")
    assert tree(root) == before
    assert handoff.gc(root, U32_MAX).removed == ()


def test_a_publish_with_a_bad_keep_writes_nothing_and_can_be_retried(root, src):
    handoff.publish(root, 1, src)
    before = tree(root)
    for keep in (0, 2**32 + 1, False):
        with pytest.raises(handoff.UsageError, match="for keep"):
            handoff.publish(root, 2, src, keep=keep)
        with pytest.raises(handoff.UsageError, match="for keep"):
            handoff.seal(root, 2, keep=keep)
    assert tree(root) == before
    # Nothing was committed, so the retry is not a conflict.
    assert handoff.publish(root, 2, src, keep=1).gc.removed == (1,)


def test_booleans_must_be_booleans(root, src):
    handoff.publish(root, 1, src)
    (root / "step_2").mkdir()  # never sealed: a repair would remove it once old
    os.utime(root / "step_2", (0, 0))
    usage(
        lambda: handoff.wait(root, latest="no"),
        "invalid value 'no' for latest: expected True or False, got str",
    )
    usage(
        lambda: handoff.fsck(root, repair="false"),
        "invalid value 'false' for repair: expected True or False, got str",
    )
    usage(lambda: handoff.fsck(root, repair=1), "invalid value 1 for repair: expected True or False, got int")
    assert (root / "step_2").exists()
    assert handoff.wait(root, latest=True, timeout=5).step == 1


def test_strings_must_be_strings(root, src):
    handoff.publish(root, 1, src)
    before = tree(root)
    usage(lambda: handoff.ls(root, prefix=5), "invalid value 5 for prefix: expected a string, got int")
    usage(lambda: handoff.pin(root, 1, b"holder"), "invalid value b'holder' for holder: expected a string, got bytes")
    usage(
        lambda: handoff.publish(root, 2, src, writer=7),
        "invalid value 7 for writer: expected a string, got int",
    )
    usage(lambda: handoff.latest(root, verify="sha1"), "invalid value 'sha1' for verify: expected 'size' or 'hash'")
    usage(lambda: handoff.wait(root, 1, pin=3), "invalid value 3 for pin: expected a string, got int")
    assert tree(root) == before


def test_paths_may_be_bytes_but_not_empty(root, src):
    handoff.publish(root, 1, src)
    assert [s.step for s in handoff.ls(os.fsencode(root))] == [1]
    assert handoff.publish(os.fsencode(root), 2, os.fsencode(src)).version.step == 2
    usage(lambda: handoff.ls(""), "invalid value '' for root: the path is empty")
    usage(lambda: handoff.ls(b""), "invalid value b'' for root: the path is empty")
    usage(lambda: handoff.ls(None), "invalid value None for root: expected a path, got NoneType")
    usage(lambda: handoff.publish(root, 3, ""), "invalid value '' for source: the path is empty")
    assert not (root / "step_3").exists()


def test_a_missing_or_misplaced_directory_has_the_cli_s_kind(root, src, tmp_path):
    with pytest.raises(handoff.NotFoundError) as caught:
        handoff.publish(root, 1, tmp_path / "nope")
    assert (caught.value.kind, caught.value.exit_code) == ("not-found", 1)
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(handoff.InvalidInputError) as caught:
        handoff.ls(tmp_path / "file")
    assert caught.value.kind == "invalid-input"
    assert str(caught.value) == f"root {tmp_path / 'file'}: not a directory"


def test_a_writer_id_readers_would_refuse_is_refused_before_the_copy(root, src):
    with pytest.raises(handoff.InvalidInputError, match="writer id: it is 17825792 bytes"):
        handoff.publish(root, 1, src, writer="w" * (17 << 20))
    assert tree(root) == []


def test_a_huge_ttl_saturates_and_the_pin_holds(root, src):
    for step in (1, 2, 3):
        handoff.publish(root, step, src)
    for ttl in (1e300, math.inf, 2**64):
        assert handoff.pin(root, 1, "reader", ttl).expires_ms == U64_MAX
    report = handoff.gc(root, 1)
    assert report.pinned == (1,) and report.removed == (2,)
    assert (root / "step_1" / "STABLE").exists()
    # The longest timedelta (about 2.7 million years) fits: converted exactly.
    days = datetime.timedelta.max.days
    assert handoff.pin(root, 3, "reader", datetime.timedelta.max).expires_ms > days * 86_400_000


def test_a_huge_timeout_saturates_rather_than_wrapping(root):
    # 2**64 s wrapped to a 2 ms timeout once; saturated, it is no timeout,
    # so the call runs until its deadline.
    started = time.monotonic()
    with pytest.raises(handoff.DeadlineExceededError) as caught:
        handoff.wait(root, 1, timeout=2**64, deadline=1.0)
    assert time.monotonic() - started >= 0.9
    assert (caught.value.kind, caught.value.exit_code) == ("deadline-exceeded", 3)
    assert isinstance(caught.value, TimeoutError)


def test_durations_refuse_nan_negatives_and_non_numbers(root):
    for value, shown in [(-1, "-1"), (math.nan, "nan"), ("5", "'5'"), (True, "True")]:
        usage(
            lambda: handoff.wait(root, 1, timeout=value),
            f"invalid value {shown} for timeout: expected a non-negative number of seconds, got {shown}",
        )
    usage(
        lambda: handoff.ls(root, deadline=-0.5),
        "invalid value -0.5 for deadline: expected a non-negative number of seconds, got -0.5",
    )


def test_exactly_one_target(root):
    usage(lambda: handoff.wait(root), "give exactly one of step, latest=True or after")
    usage(lambda: handoff.wait(root, 1, latest=True), "give exactly one of step, latest=True or after")


class Index:
    """An integer type that is not ``int`` (as NumPy's are)."""

    def __init__(self, value):
        self.value = value

    def __index__(self):
        return self.value


def test_integer_types_with_index_are_integers(root, src):
    assert handoff.publish(root, Index(3), src).version.step == 3
    assert handoff.gc(root, Index(1)).kept == (3,)


# --- properties over the argument space ---------------------------------

anything = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, U32_MAX, U32_MAX + 1, U64_MAX, U64_MAX + 1, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.lists(st.integers(), max_size=2),
)


def fresh_root():
    """A root of one example's own (the fixtures are shared by all of a
    property's examples)."""
    return tempfile.TemporaryDirectory(prefix="handoff-property-")


@PROPERTY
@given(step=anything)
def test_property_a_step_is_used_exactly_when_it_is_a_u64(root, step):
    in_range = isinstance(step, int) and not isinstance(step, bool) and 0 <= step <= U64_MAX
    if in_range:
        # It reaches the component unchanged: the error names that step.
        with pytest.raises(handoff.NotFoundError, match=f"step {step}\\b|step_{step}\\b"):
            handoff.pin(root, step, "h")
    else:
        with pytest.raises(handoff.UsageError, match="^invalid value .* for step: "):
            handoff.pin(root, step, "h")
    assert tree(root) == []


@PROPERTY
@given(keep=anything)
def test_property_gc_runs_exactly_when_keep_is_a_u32_of_at_least_one(src, keep):
    with fresh_root() as name:
        root = Path(name)
        handoff.publish(root, 1, src)
        handoff.publish(root, 2, src)
        before = tree(root)
        in_range = isinstance(keep, int) and not isinstance(keep, bool) and 1 <= keep <= U32_MAX
        if in_range:
            # It reaches the component unchanged: keep 1 removes step 1.
            assert handoff.gc(root, keep).kept == (1, 2)[-keep:]
        else:
            with pytest.raises(handoff.UsageError, match="^invalid value .* for keep: "):
                handoff.gc(root, keep)
            assert tree(root) == before


@PROPERTY
@given(
    ttl=st.one_of(
        anything,
        st.floats(min_value=0, max_value=1e30),
        st.integers(min_value=0, max_value=2**66),
    )
)
def test_property_a_ttl_reaches_the_pin_saturated_never_wrapped(root, src, ttl):
    if not (root / "step_1").exists():
        handoff.publish(root, 1, src)
    valid = (
        isinstance(ttl, (int, float))
        and not isinstance(ttl, bool)
        and not math.isnan(ttl)
        and ttl >= 0
    )
    if not valid:
        with pytest.raises(handoff.UsageError, match="^invalid value .* for ttl: "):
            handoff.pin(root, 1, "h", ttl)
        return
    before = int(time.time() * 1000)
    expires = handoff.pin(root, 1, "h", ttl).expires_ms
    after = int(time.time() * 1000)
    ms = ttl * 1000
    if ms >= U64_MAX:
        assert expires == U64_MAX
    else:
        # The file server's clock is this machine's here; 1 s of slack for
        # the millisecond rounding of each side.
        want = math.ceil(ms)
        assert before + want - 1000 <= expires <= min(after + want + 1000, U64_MAX)


@PROPERTY
@given(flag=anything)
def test_property_repair_is_only_ever_a_bool(root, flag):
    if isinstance(flag, bool):
        assert isinstance(handoff.fsck(root, repair=flag), list)
    else:
        with pytest.raises(handoff.UsageError, match="^invalid value .* for repair: expected True or False"):
            handoff.fsck(root, repair=flag)
