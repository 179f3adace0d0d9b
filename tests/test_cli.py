"""`hf-attn`: every subcommand is reachable, and mistakes get one clear line."""

import pytest

from hf_attn import cli


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in ("quickstart", "eval", "export", "push", "bench", "toy"):
        assert name in out


def test_unknown_subcommand_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["frobnicate"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_every_subcommand_module_provides_its_arguments():
    import argparse
    import importlib

    for name, (module_name, prefix, _) in cli.SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        parser = argparse.ArgumentParser()
        getattr(module, f"{prefix}add_arguments")(parser)
        assert callable(getattr(module, f"{prefix}run")), name


def test_bench_names_the_available_scripts(capsys):
    assert cli.main(["bench", "no_such_benchmark"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hf-attn bench: error: ")
    assert "no_such_benchmark" in err and "attention" in err and "triton_kernels" in err
