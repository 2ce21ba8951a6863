"""The delayed-feedback simulator: calibration holds, the delay knob moves the delays, and a
simulated file made with other settings than the config asks for is refused, not reused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rankstream.data.simulate import SimParams, simulate_cascade, write_simulated
from rankstream.data.stream.prepare import StreamDataConfig, resolve_path


def _conversion_delays(params: SimParams) -> tuple[float, np.ndarray]:
    raw, _ = simulate_cascade(40_000, seed=3, params=params)
    click = raw["c0"].cast(int).to_numpy()
    pay = raw["c1"].str.strip_chars("[]")
    converted = (pay != "").to_numpy()
    delays = pay.filter(pay != "").cast(int).to_numpy() - click[converted]
    return float(converted.mean()), delays


def test_impulse_logit_moves_conversions_out_of_the_observation_window() -> None:
    cvr_default, d_default = _conversion_delays(SimParams())
    cvr_mid, d_mid = _conversion_delays(SimParams(impulse_logit=-4.5))
    cvr_short, d_short = _conversion_delays(SimParams(impulse_logit=-2.2))
    in_window = lambda d: float((d < 864).mean())  # noqa: E731  (0.01 day)
    assert 0.04 < in_window(d_default) < 0.10  # the documented ~7% (default -7.5, the 5M-click stream)
    assert 0.2 < in_window(d_mid) < 0.35  # ~27% (-4.5, the 1.5M-click default before stop 20)
    assert 0.5 < in_window(d_short) < 0.7  # the earlier default's ~60%
    assert np.median(d_default) > np.median(d_mid) > 2 * np.median(d_short)
    for cvr in (cvr_default, cvr_mid, cvr_short):  # CVR stays calibrated (0.091 within 3 days, plus the tail)
        assert 0.08 < cvr < 0.105


def test_the_config_default_is_the_simulators_default() -> None:
    assert StreamDataConfig().sim_impulse_logit == SimParams().impulse_logit


def test_a_simulated_file_is_reused_only_with_the_settings_it_was_made_with(tmp_path: Path) -> None:
    cfg = StreamDataConfig(path="sim/cascade_sim.tsv", simulate="cascade", sim_size=3000, sim_seed=1)
    path = resolve_path(tmp_path, cfg)  # simulated on first use
    assert path.is_file() and path.with_name("cascade_sim.sim.json").is_file()
    mtime = path.stat().st_mtime_ns
    assert resolve_path(tmp_path, cfg) == path and path.stat().st_mtime_ns == mtime  # same settings: reused
    for other in (StreamDataConfig(path=cfg.path, simulate="cascade", sim_size=4000, sim_seed=1),
                  StreamDataConfig(path=cfg.path, simulate="cascade", sim_size=3000, sim_seed=2),
                  StreamDataConfig(path=cfg.path, simulate="cascade", sim_size=3000, sim_seed=1, sim_impulse_logit=-2.2)):
        with pytest.raises(ValueError, match="simulated with other settings"):
            resolve_path(tmp_path, other)


def test_a_file_from_before_the_settings_record_is_refused(tmp_path: Path) -> None:
    path = write_simulated("cascade", tmp_path / "sim", seed=0, size=2000)
    path.with_name("cascade_sim.sim.json").unlink()  # as an older rankstream left it (README only)
    cfg = StreamDataConfig(path="sim/cascade_sim.tsv", simulate="cascade", sim_size=2000)
    with pytest.raises(ValueError, match="older rankstream"):
        resolve_path(tmp_path, cfg)


def test_a_file_not_made_by_the_simulator_is_used_as_it_is(tmp_path: Path) -> None:
    path = write_simulated("cascade", tmp_path / "real", seed=0, size=2000)
    for side in ("cascade_sim.sim.json", "cascade_sim.README.txt"):
        path.with_name(side).unlink()
    cfg = StreamDataConfig(path="real/cascade_sim.tsv", simulate="cascade", sim_size=99)
    assert resolve_path(tmp_path, cfg) == path


def test_an_unknown_simulator_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown simulator 'criteo'"):
        write_simulated("criteo", tmp_path / "sim", size=100)
    assert not (tmp_path / "sim").exists()
