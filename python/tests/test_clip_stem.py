"""GS stem: shapes, features, and invariance to splat order and padding."""

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="gscodec.clip needs the clip extra (torch)")
pytest.importorskip("open_clip", reason="gscodec.clip needs the clip extra (open_clip_torch)")

import gscodec  # noqa: E402
from gscodec.clip import GSStem, collate_splats, splat_features  # noqa: E402

TINY = dict(n_tokens=5, dim=16, depth=2, heads=2, n_freqs=4)


def random_splats(n: int, seed: int) -> np.ndarray:
    """(n, 8) valid splat rows: positions in [0,1], positive Cholesky diagonal, colours."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, 8), np.float32)
    out[:, 0:2] = rng.random((n, 2))
    out[:, 2] = rng.uniform(0.01, 0.2, n)
    out[:, 3] = rng.normal(0, 0.05, n)
    out[:, 4] = rng.uniform(0.01, 0.2, n)
    out[:, 5:8] = rng.random((n, 3))
    return out


@pytest.fixture(scope="module")
def stem() -> GSStem:
    torch.manual_seed(0)
    s = GSStem(32, **TINY).eval()
    with torch.no_grad():  # non-zero pooling path, so the class token depends on the splats
        s.pool_proj.weight.normal_()
    return s


def test_output_shape(stem):
    splats, mask = collate_splats([random_splats(7, 0), random_splats(3, 1)])
    out = stem(splats, mask)
    assert out.shape == (2, 1 + TINY["n_tokens"], 32)
    assert stem.n_tokens == TINY["n_tokens"]
    assert torch.isfinite(out).all()


def test_features_match_splat_covariance():
    rows = random_splats(6, 2)
    cov = gscodec.Splats.from_array(rows, 32, 32).covariance
    feats = splat_features(torch.from_numpy(rows), n_freqs=3)
    assert feats.shape == (6, 2 + 4 * 3 + 6)
    log_sx, log_sy, rho = feats[:, -6].numpy(), feats[:, -5].numpy(), feats[:, -4].numpy()
    np.testing.assert_allclose(log_sx, 0.5 * np.log(cov[:, 0]), rtol=1e-5)
    np.testing.assert_allclose(log_sy, 0.5 * np.log(cov[:, 2]), rtol=1e-5)
    np.testing.assert_allclose(
        rho, cov[:, 1] / np.sqrt(cov[:, 0] * cov[:, 2]), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(feats[:, -3:].numpy(), rows[:, 5:8])


@torch.no_grad()
def test_invariant_to_splat_order(stem):
    rows = random_splats(20, 3)
    perm = np.random.default_rng(4).permutation(20)
    a = stem(*collate_splats([rows]))
    b = stem(*collate_splats([rows[perm]]))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_padding_never_changes_an_output(stem):
    sets = [random_splats(n, 10 + n) for n in (1, 4, 9)]
    alone = [stem(*collate_splats([s])) for s in sets]
    splats, mask = collate_splats(sets)
    # Garbage in padding rows, including values whose log or division would be NaN/inf.
    splats[~mask] = torch.tensor([float("nan"), float("inf"), 0, 0, 0, -1e30, 0, 1])
    batched = stem(splats, mask)
    for i, ref in enumerate(alone):
        torch.testing.assert_close(batched[i : i + 1], ref, atol=1e-5, rtol=1e-5)
    wider = torch.cat([splats, torch.zeros(3, 5, 8)], 1), torch.cat(
        [mask, torch.zeros(3, 5, dtype=torch.bool)], 1
    )
    torch.testing.assert_close(stem(*wider), batched, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_empty_splat_set_is_finite(stem):
    splats, mask = collate_splats([np.zeros((0, 8), np.float32), random_splats(2, 5)])
    assert torch.isfinite(stem(splats, mask)).all()


def test_rejects_bad_shapes(stem):
    with pytest.raises(ValueError, match=r"\[B, N, 8\]"):
        stem(torch.zeros(2, 3, 7))
    with pytest.raises(ValueError, match="mask"):
        stem(torch.zeros(2, 3, 8), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        collate_splats([np.zeros((3, 5))])


def test_gradients_reach_every_stem_parameter(stem):
    stem.zero_grad()
    splats, mask = collate_splats([random_splats(6, 6), random_splats(2, 7)])
    stem(splats, mask).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in stem.parameters())


def test_import_gscodec_does_not_import_torch():
    code = (
        "import sys, gscodec; assert 'torch' not in sys.modules and 'open_clip' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_query_grid_keeps_the_set_invariances():
    """Queries with positions: invariant to splat order and padding, finite when empty."""
    torch.manual_seed(0)
    stem = GSStem(32, **dict(TINY, n_tokens=4), query_grid=True).eval()
    rows = random_splats(6, 2)
    splats, mask = collate_splats([rows, rows[::-1].copy(), np.zeros((0, 8), np.float32)])
    padded, padded_mask = collate_splats([rows, random_splats(9, 3)])
    with torch.no_grad():
        out = stem(splats, mask)
        torch.testing.assert_close(out[0], out[1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(stem(padded, padded_mask)[0], out[0], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="square"):
        GSStem(32, **dict(TINY, n_tokens=5), query_grid=True)


def test_query_grid_attends_nearby_splats_first():
    """At initialization the distance bias makes the query of cell 0 (top left) favour a
    splat there."""
    from gscodec.clip.stem import grid_centres

    torch.testing.assert_close(
        grid_centres(4), torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    )
    torch.manual_seed(0)
    stem = GSStem(32, **dict(TINY, n_tokens=4, depth=1), query_grid=True).eval()
    base = random_splats(8, 4)
    base[:, 0:2] = 0.8  # everything far from cell 0
    moved = base.copy()
    moved[0, 0:2] = 0.2  # one splat into cell 0
    a, _ = collate_splats([base])
    b, _ = collate_splats([moved])
    with torch.no_grad():
        change = (stem(a) - stem(b)).norm(dim=-1)[0, 1:]  # per token
    assert change[0] == change.max()
