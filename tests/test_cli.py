"""The `zoo` command line: help, list, convert (success and failure), parity; exit codes and messages."""
import json

import torch

import zoo

MODEL = "triplet_resnet18_cifar"


def test_help_and_no_command(cli):
    r = cli("--help")
    assert r.returncode == 0 and "convert" in r.stdout and "parity" in r.stdout
    r = cli()
    assert r.returncode == 2 and "usage" in r.stdout
    r = cli("convert", "--help")
    assert r.returncode == 0 and "atomically" in r.stdout


def test_list(cli):
    r = cli("list")
    assert r.returncode == 0
    for name in zoo.list_models("triplet"):
        assert name in r.stdout
    assert "11,691,912" in r.stdout  # published parameter count of triplet_resnet18
    r = cli("list", "--family", "triplet", "--json")
    rows = json.loads(r.stdout)
    r18 = next(x for x in rows if x["name"] == "triplet_resnet18")
    assert r18["params"] == 11_691_912 and r18["interpolation"] == "bilinear" and r18["crop_pct"] == 0.875
    r = cli("list", "--family", "nope")
    assert r.returncode == 2 and "unknown family" in r.stderr


def test_convert_success_and_refusals(cli, tmp_path):
    model = zoo.create_model(MODEL, "pt")
    src = tmp_path / "ta.pth.tar"
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}, "epoch": 1}, src)
    dst = tmp_path / "ta.ckpt"
    r = cli("convert", MODEL, str(src), str(dst))
    assert r.returncode == 0, r.stderr
    assert "removed the 'module.' prefix" in r.stdout and "MindSpore names" in r.stdout and dst.exists()
    before = dst.read_bytes()
    r = cli("convert", MODEL, str(src), str(dst))
    assert r.returncode == 2 and "already exists" in r.stderr and "nothing was written" in r.stderr
    assert dst.read_bytes() == before
    r = cli("convert", MODEL, str(src), str(dst), "--force")
    assert r.returncode == 0
    r = cli("convert", MODEL, str(dst), str(tmp_path / "back.safetensors"), "--to", "pt")
    assert r.returncode == 0 and "PyTorch names" in r.stdout
    r = cli("convert", "triplet_resnet18_cifr", str(src), str(tmp_path / "x.ckpt"))
    assert r.returncode == 2 and "Did you mean: triplet_resnet18_cifar" in r.stderr
    r = cli("convert", "triplet_resnet50_cifar", str(src), str(tmp_path / "y.ckpt"))
    assert r.returncode == 2 and "does not fit triplet_resnet50_cifar" in r.stderr
    assert not (tmp_path / "y.ckpt").exists()


def test_parity_command(cli, tmp_path):
    out = tmp_path / "r.json"
    r = cli("parity", MODEL, "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1/1 models within the parity bounds" in r.stdout and "identical" in r.stdout
    res = json.loads(out.read_text())[0]
    assert res["model"] == MODEL and res["passed"] and res["fwd"]["graph"] <= 1e-4 and res["grad_ratio"] <= 1
    r = cli("parity", "no_such_model")
    assert r.returncode == 2 and "unknown model" in r.stderr
    r = cli("parity")
    assert r.returncode == 2
