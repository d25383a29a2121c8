"""The Lightning callback, with real Lightning on the CPU: the norms it records are those of
Lightning's own `grad_norm`, taken before Lightning's gradient clipping."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pl = pytest.importorskip("lightning.pytorch")
from lightning.pytorch.utilities import grad_norm  # noqa: E402

from gradexp.integrations.lightning import GradexpCallback  # noqa: E402
from tests.conftest import read_scalars  # noqa: E402


class Classifier(pl.LightningModule):
    """Its training_step calls its submodules, never the module itself (as Lightning's examples do)."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU())
        self.head = nn.Linear(32, 3)
        self.norms: list[dict[str, float]] = []
        self.losses: list[float] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.head(self.encoder(x)), y)
        self.losses.append(loss.item())
        return loss

    def on_before_optimizer_step(self, optimizer):
        self.norms.append({k: v.item() for k, v in grad_norm(self, norm_type=2).items()})

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_callback_records_lightnings_grad_norm_before_its_clipping(tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(256, 8) * 2, torch.randint(0, 3, (256,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    model, callback = Classifier(), GradexpCallback(tmp_path, log_every=1, diagnostics_every=2, report=False)
    trainer = pl.Trainer(
        max_steps=6,
        accumulate_grad_batches=2,
        accelerator="cpu",
        gradient_clip_val=0.01,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader)
    summary = callback.monitor.summary
    scalars = read_scalars(tmp_path)
    paths = ["encoder.0.weight", "encoder.2.weight", "head.weight"]
    assert summary["status"] == "completed" and summary["steps_completed"] == 6
    for step, norms in enumerate(model.norms):
        recorded = [scalars[f"grad_norm/{name}"][step] for name in summary["layers"]]
        assert recorded == pytest.approx([norms[f"grad_2.0_norm/{p}"] for p in paths], rel=1e-5)
        assert scalars["grad_norm/total"][step] == pytest.approx(norms["grad_2.0_norm_total"], rel=1e-5)
        assert scalars["grad_norm/total_clipped"][step] == pytest.approx(0.01, rel=1e-3)
        micro_batches = model.losses[2 * step : 2 * step + 2]  # the step's loss: their mean
        assert scalars["loss/train"][step] == pytest.approx(sum(micro_batches) / 2, rel=1e-5)
    assert summary["clip_fraction"] == 1.0
    # its training_step never calls the module itself: the network is traced as it trains, and
    # the hooks' diagnostics begin at the first diagnostic step after step 0
    assert sorted(read_scalars(tmp_path)[f"grad_signal/{summary['layers'][0]}"]) == [2, 4]
