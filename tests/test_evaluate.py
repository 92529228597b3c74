"""evaluate.py picks the LightningModule that wrote a checkpoint."""

import importlib.util

import torch

from conftest import REPO


def _evaluate_script():
    spec = importlib.util.spec_from_file_location("_evaluate_script", REPO / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_module_class_follows_the_checkpoint_preset(tmp_path):
    from mmemb.lit.pretrain import PretrainModule
    from mmemb.lit.teacher import TeacherModule

    evaluate = _evaluate_script()
    for preset, expected in (("teacher_tiny", TeacherModule), ("tiny", PretrainModule)):
        path = tmp_path / f"{preset}.ckpt"
        torch.save({"hyper_parameters": {"preset": preset}, "state_dict": {}}, path)
        assert evaluate.module_class(path) is expected
