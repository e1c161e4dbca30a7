"""The diagnostics report: `ppgen report DIR` writes one self-contained HTML page and the
posterior as netCDF, and the page renders in headless Chromium."""
import base64
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import arviz as az
import numpy as np
import pytest
from PIL import Image

import ppgen
from ppgen import diagnostics as D
from ppgen.runs import train_run

PPGEN = str(Path(sys.executable).parent / "ppgen")
SECTIONS = {"config": "Configuration", "training": "Training curves", "numbers": "The numbers",
            "verdict": "Verdict", "khat": "PSIS k-hat", "samples": "Reconstructions and samples",
            "traversals": "Latent traversals", "kl": "KL per dimension", "ppc": "Posterior predictive checks"}
FAST = ["--samples", "20", "--importance-samples", "100", "--max-obs", "120"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vae"
    train_run({"model": "vae", "data": "digits", "epochs": 2, "hidden": 32, "z_dim": 4, "seed": 0}, out,
              device="cpu", progress=False, iwae_k=20)
    result = subprocess.run([PPGEN, "report", str(out), *FAST], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "report.html" in result.stdout
    return out


def images(page: str) -> list:
    return re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)


def test_report_has_every_section_and_embedded_figures(run_dir):
    page = (run_dir / "report.html").read_text()
    for sid, title in SECTIONS.items():
        assert f'<section id="{sid}"><h2>{title}' in page, sid
    pngs = images(page)
    assert len(pngs) >= 7
    for data in pngs:
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            assert im.format == "PNG" and min(im.size) > 20
    assert len(pngs) == page.count("<img ")  # every image is embedded
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # no external resources
    assert "<script" not in page
    assert not re.search(r"r_hat|ess_bulk|ess_tail", page)  # no MCMC diagnostics of i.i.d. guide draws


def test_report_numbers_agree_with_posterior_netcdf(run_dir):
    page = (run_dir / "report.html").read_text()
    idata = az.from_netcdf(str(run_dir / "posterior.nc"))
    assert {"posterior", "posterior_predictive", "conditional_log_likelihood", "observed_data", "training", "vi_diagnostics",
            "latent_kl"} <= set(idata.groups())
    diag = idata.vi_diagnostics
    assert diag.sizes["datapoint"] == 120 and diag.attrs["num_samples"] == 100
    assert idata.posterior.sizes["draw"] == 20
    n = diag.sizes["datapoint"]
    for share in D.khat_bands(diag["khat"]).values():
        assert f"{share:.1%} ({round(share * n)})" in page
    assert f"{float(diag['elbo'].mean()):.3f} nats" in page
    assert f"{float(diag['log_px'].mean()):.3f} ±" in page


def test_python_api_returns_an_inline_report(run_dir):
    before = (run_dir / "report.html").stat().st_mtime_ns
    out = ppgen.report(run_dir, num_samples=10, importance_samples=50, max_obs=40)
    assert out.path == run_dir / "report.html" and out.posterior_path == run_dir / "posterior.nc"
    assert out.path.stat().st_mtime_ns > before
    fragment = out._repr_html_()
    assert fragment.startswith('<div class="ppgen-report">') and "<html" not in fragment
    assert all(f'id="{sid}"' in fragment for sid in SECTIONS)
    assert az.from_netcdf(str(out.posterior_path)).vi_diagnostics.sizes["datapoint"] == 40


def test_report_of_a_sequence_model(tmp_path):
    """The VRNN's report: piano rolls, KL per time step, per-frame numbers, no traversals."""
    out = tmp_path / "vrnn"
    train_run({"model": "vrnn", "data": "synthetic", "epochs": 1, "hidden": 16, "z_dim": 2, "batch_size": 72,
               "seed": 0}, out, device="cpu", progress=False, iwae_k=5)
    page = ppgen.report(out, num_samples=10, importance_samples=50, max_obs=8).path.read_text()
    for sid in ("config", "training", "numbers", "verdict", "khat", "samples", "kl", "ppc"):
        assert f'<section id="{sid}">' in page, sid
    assert 'id="traversals"' not in page
    assert "per frame" in page
    idata = az.from_netcdf(str(out / "posterior.nc"))
    assert idata.posterior["z"].dims == ("chain", "draw", "datapoint", "time", "latent")
    assert idata.latent_kl["z"].dims == ("datapoint", "time")


# -- rendering in headless Chromium --------------------------------------------------------------

PROBE = ('<script>window.addEventListener("load", () => { const imgs = Array.from(document.images); '
         'const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length; '
         'document.body.setAttribute("data-images", imgs.length + ":" + broken); });</script>')


def chromium() -> str:
    exe = shutil.which("chromium")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (apt-get install -y --no-install-recommends chromium "
                        "fonts-dejavu-core); the report must be checked in a real browser in CI")
        pytest.skip("chromium is not installed (local run without CI)")
    return exe


def run_chromium(exe, tmp_path, url, *args):
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
           f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0", *args, url]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    return result, console


def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    exe = chromium()
    shot = tmp_path / "report.png"
    result, console = run_chromium(exe, tmp_path, (run_dir / "report.html").as_uri(),
                                   f"--screenshot={shot}", "--window-size=1200,3000")
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    assert not console, console
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (3000, 1200)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.01  # not blank: text and figures drawn

    probe = tmp_path / "probe.html"  # the same page plus a script that counts images that failed to decode
    probe.write_text((run_dir / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    result, console = run_chromium(exe, tmp_path, probe.as_uri(), "--virtual-time-budget=10000", "--dump-dom")
    assert not console, console
    counts = re.search(r'data-images="(\d+):(\d+)"', result.stdout)
    assert counts, result.stdout[-500:]
    assert int(counts[1]) >= 7 and int(counts[2]) == 0


def test_report_uses_the_runs_k_and_ppgen_compare_pairs_two_cli_runs(tmp_path):
    run_dir, other = tmp_path / "vae", tmp_path / "mixture"
    for out, prior, seed in ((run_dir, "normal", 0), (other, "mixture", 1)):
        train_run({"model": "vae", "data": "digits", "prior": prior, "epochs": 2, "hidden": 32, "z_dim": 4,
                   "seed": seed}, out, device="cpu", progress=False, iwae_k=30)
        result = subprocess.run([PPGEN, "report", str(out), "--samples", "10", "--max-obs", "120"], capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr
    idata = az.from_netcdf(str(other / "posterior.nc"))
    assert idata.vi_diagnostics.attrs["num_samples"] == 30  # the K of metrics.json, not a report default
    assert "log_likelihood" not in idata.groups()
    result = subprocess.run([PPGEN, "compare", str(run_dir), str(other)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "elpd_diff" in result.stdout and "mixture" in result.stdout and "vae" in result.stdout
    table = ppgen.compare(run_dir, other)
    first = az.from_netcdf(str(run_dir / "posterior.nc")).vi_diagnostics["log_px"].values
    second = idata.vi_diagnostics["log_px"].values
    diff = first - second
    assert table.loc["mixture", "elpd"] == pytest.approx(second.sum())
    worse = table.index[1]
    assert table.loc[worse, "elpd_diff"] == pytest.approx(abs(diff.sum()))
    assert table.loc[worse, "dse"] == pytest.approx(np.sqrt(len(diff) * diff.var()))
    # the ArviZ functions the README calls meaningful run on the file as written
    az.summary(idata, kind="stats")
    az.hdi(idata.posterior)
    result = subprocess.run([PPGEN, "compare", str(run_dir), str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and "ppgen report" in result.stderr and "Traceback" not in result.stderr
    with pytest.raises(ValueError, match="120 datapoints and short 40"):
        short = tmp_path / "short.nc"
        D.write_netcdf(az.from_netcdf(str(other / "posterior.nc")).isel(datapoint=slice(0, 40)), short)
        ppgen.compare(other, short)
