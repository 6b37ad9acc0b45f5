"""The package's ``handoff`` console command: the native CLI's contract,
run by wasmtime-py, as a separate process the way a user runs it."""

import json
import os
import shutil
import subprocess
import sys

from handoff._cli import _directories


def handoff_cmd(*args, check=None):
    """Run ``python -m handoff._cli ARGS``: the console script's entry point."""
    out = subprocess.run(
        [sys.executable, "-m", "handoff._cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check is not None:
        assert out.returncode == check, (out.returncode, out.stdout, out.stderr)
    return out


def test_directories_are_found_where_clap_finds_them():
    sub, dirs = _directories(["--prefix", "ckpt_", "publish", "--step", "3", "--json", "SRC", "--root", "R"])
    assert sub == "publish"
    assert [(d.index, d.writable, d.what) for d in dirs] == [(6, False, "source"), (8, True, "root")]
    sub, dirs = _directories(["wait", "--root=R", "--latest", "--verify", "hash"])
    assert sub == "wait" and [(d.index, d.what) for d in dirs] == [(1, "root")]
    # After `--`, a name that looks like a flag is the source.
    _, dirs = _directories(["publish", "--root", "R", "--step", "1", "--", "--weird"])
    assert [(d.index, d.what) for d in dirs] == [(2, "root"), (6, "source")]
    # A flag's value that looks like a subcommand is still a value.
    sub, dirs = _directories(["--prefix", "publish", "ls", "--root", "R"])
    assert sub == "ls" and [d.index for d in dirs] == [4]


def test_publish_wait_gc_through_the_command(root, src):
    out = handoff_cmd("publish", "--root", root, "--step", "1", src, "--json", "--writer", "w", check=0)
    published = json.loads(out.stdout)
    assert published["path"] == str(root.resolve() / "step_1")
    assert [f["path"] for f in published["files"]] == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "sub/extra.bin",
    ]
    assert published["fsyncs"] > 0

    out = handoff_cmd("wait", "--root", root, "--step", "1", "--verify", "hash", "--json", check=0)
    assert json.loads(out.stdout)["files"] == published["files"]

    handoff_cmd("publish", "--root", root, "--step", "2", src, check=0)
    out = handoff_cmd("gc", "--root", root, "--keep", "1", "--json", check=0)
    assert json.loads(out.stdout)["removed"] == [1]
    assert not (root / "step_1").exists()


def test_exit_codes_are_the_native_cli_s(root, src):
    handoff_cmd("publish", "--root", root, "--step", "1", src, check=0)
    out = handoff_cmd("publish", "--root", root, "--step", "1", src, check=5)
    assert "handoff: error (conflict)" in out.stderr
    out = handoff_cmd("wait", "--root", root, "--step", "9", "--timeout", "100ms", "--json", check=3)
    assert json.loads(out.stdout)["error"]["exit_code"] == 3
    handoff_cmd("gc", "--root", root, "--keep", "0", check=2)
    handoff_cmd("frobnicate", check=2)
    (root / "step_1" / "sub" / "extra.bin").write_bytes(b"y" * 10)
    handoff_cmd("wait", "--root", root, "--step", "1", "--verify", "hash", "--settle", "0s", check=4)


def test_a_missing_root_or_source_is_named(tmp_path, src):
    out = handoff_cmd("ls", "--root", tmp_path / "nope", "--json", check=1)
    error = json.loads(out.stdout)["error"]
    assert error["kind"] == "not-found" and str(tmp_path / "nope") in error["message"]
    assert error["path"] == str(tmp_path / "nope") and error["exit_code"] == 1
    assert "No such file or directory" in out.stderr
    (tmp_path / "file").write_text("")
    out = handoff_cmd("publish", "--root", tmp_path, "--step", "1", tmp_path / "file", check=1)
    assert "source" in out.stderr and "not a directory" in out.stderr


def test_paths_are_real_paths_and_nothing_else_is_reachable(tmp_path, root, src):
    link = tmp_path / "link"
    link.symlink_to(root)
    out = handoff_cmd("publish", "--root", link, "--step", "4", src, "--json", check=0)
    assert json.loads(out.stdout)["path"] == str(root.resolve() / "step_4")
    # A payload symlink leaving the source is refused: the component sees
    # only the root and the source.
    (src / "escape").symlink_to("/etc/hostname")
    out = handoff_cmd("publish", "--root", root, "--step", "5", src, check=None)
    assert out.returncode != 0
    assert not (root / "step_5").exists()


def test_a_source_inside_the_root_is_read_only(root, src):
    inner = root / "incoming"
    shutil.copytree(src, inner)
    handoff_cmd("publish", "--root", root, "--step", "6", inner, check=0)
    assert (root / "step_6" / "STABLE").exists()
    assert sorted(p.name for p in inner.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "sub",
    ]


def test_names_that_are_not_utf8_are_refused_clearly(tmp_path, src):
    root = os.fsencode(tmp_path) + b"/r\xff"
    os.mkdir(root)
    out = subprocess.run(
        [sys.executable, "-m", "handoff._cli", b"ls", b"--root", root],
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 1, out
    assert b"not valid UTF-8" in out.stderr
    out = handoff_cmd("publish", "--root", tmp_path, "--step", "1", src, check=None)
    assert out.returncode == 0, out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "handoff._cli", b"wait", b"--root", os.fsencode(tmp_path),
         b"--step", b"1", b"--pin", b"h\xff"],
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 2, out
    assert b"argument 7 is not valid UTF-8" in out.stderr


def test_the_scan_knows_every_flag_that_takes_no_value():
    # The argument scan must tell switches from flags with values exactly as
    # clap does, or it would take a value for the root: check it against the
    # command's own --help for every subcommand.
    import re

    from handoff._cli import _SWITCHES

    subcommands = ["publish", "seal", "wait", "watch", "ls", "pin", "unpin", "gc", "fsck"]
    for sub in subcommands:
        help_text = handoff_cmd(sub, "--help", check=0).stdout
        for line in help_text.splitlines():
            m = re.match(r"\s+(?:-(\w), )?--([\w-]+)( <[^>]+>)?", line)
            if not m:
                continue
            short, name, value = m.groups()
            assert (f"--{name}" in _SWITCHES) == (value is None), (sub, line)
            if short:
                assert (f"-{short}" in _SWITCHES) == (value is None), (sub, line)


def test_fetch_through_the_command_makes_its_local_root_but_never_inside_the_shared_one(root, src, tmp_path):
    handoff_cmd("publish", "--root", root, "--step", "4", src, check=0)
    local = tmp_path / "local" / "adapters"
    out = handoff_cmd("--json", "fetch", "--root", root, "--latest", "--to", local, check=0)
    report = json.loads(out.stdout)
    assert report["path"] == str(local / "step_4") and report["copied"] is True
    assert (local / "step_4" / "STABLE").is_file()
    out = handoff_cmd("--json", "fetch", f"--root={root}", "--step", "4", f"--to={root / 'in' / 'deeper'}", check=1)
    assert json.loads(out.stdout)["error"]["kind"] == "invalid-input"
    assert not (root / "in").exists()
