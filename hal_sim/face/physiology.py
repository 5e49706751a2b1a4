"""Physiology of one simulated person: heart beats, breathing, blinks, expressions, tension episodes.

Why continuous-time signals on a fine grid: frames are taken at jittered times (and the simulated
camera runs on its own clock), so every quantity must be evaluable at any time ``t``.  Rates are
integrated into phases on a 100 Hz grid; a beat is where the cardiac phase crosses an integer (the
integral pulse frequency modulation model), so beat times and instantaneous HR agree by
construction.

Models and sources
------------------
* Heart rate = baseline + tension response + respiratory sinus arrhythmia (RSA) + low-frequency
  (Mayer-wave, ~0.1 Hz) + very-low-frequency (1/f) variability.
  - LF component: the spectral method of ECGSYN (McSharry, Clifford, Tarassenko & Smith 2003,
    IEEE TBME 50:289) - a Gaussian spectral peak at 0.1 Hz (width 0.01 Hz), random phases.
  - HF component: RSA locked to this person's own breathing, heart rate rising during inspiration
    (Hirsch & Bishop 1981, Am J Physiol 241:H620: 2-10 bpm peak-to-peak at rest, smaller at faster
    breathing).  Bands follow the Task Force of the ESC/NASPE (1996), Circulation 93:1043.
  - Beats: integral pulse frequency modulation (IPFM, Bayly 1968; Mateo & Laguna 2000, IEEE TBME
    47:985).
* Pulse waveform (blood volume at the skin): two Gaussians per beat, a systolic wave and a later
  smaller diastolic/reflected wave, the construction of PPGSynth (Tang et al. 2020, Front. Med.
  7:597774).  Zero-mean, unit peak-to-peak; phase 0 is the foot of the pulse wave.
* Resting values: HR 55-100 bpm, respiration 12-20 /min, spontaneous blinking ~15-20 /min
  (Bentivoglio et al. 1997, Mov Disord 12:1028: 17 /min at rest), blink duration 100-400 ms
  (Caffier, Erdmann & Ullsperger 2003, Eur J Appl Physiol 89:319; Stern, Walrath & Goldstein 1984).
* Tension (acute stress, e.g. the Trier Social Stress Test, Kirschbaum et al. 1993, and the
  review by Allen et al. 2014, Neurosci Biobehav Rev 38:94): HR +10..+30 bpm, faster and shallower
  breathing (Grassmann et al. 2016, Front Psychiatry 7:229 - review of respiratory changes under
  stress and cognitive load), reduced RSA (vagal withdrawal), more blinking when anxious
  (Harrigan & O'Connell 1996, Pers Individ Differ 21:205), and more brow lowering (AU4) / lip
  pressing.  The rise follows a first-order lag (8 s) and recovery is slower (25 s).

With the default ranges, 5-min calm records give SDNN ~25-45 ms and RMSSD ~25-45 ms, within the
short-term norms of Nunan, Sandercock & Brodie 2010 (PACE 33:1407); tension lowers RMSSD to
~5-10 ms (vagal withdrawal).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from hal_sim.face.truth import STATE_CALM, STATE_TENSE

if TYPE_CHECKING:
    from hal_sim.face.real_ppg import RealPulse

GRID_HZ = 100.0

# Respiration: inspiration takes ~40 % of the cycle (I:E about 1:1.5).
_INSPIRATION_FRACTION = 0.4


@dataclass(frozen=True)
class PhysiologyParams:
    """One person's baseline and how they react to tension.  Sample with :func:`sample_params`."""

    base_hr_bpm: float = 70.0
    base_rr_bpm: float = 15.0
    base_blink_per_min: float = 17.0
    tense_hr_delta_bpm: float = 18.0
    tense_rr_delta_bpm: float = 5.0
    tense_blink_factor: float = 1.6
    rsa_pp_bpm: float = 5.0  # peak-to-peak RSA at rest
    lf_sd_bpm: float = 1.8  # Mayer-wave HR variability
    vlf_sd_bpm: float = 1.2  # slow 1/f drift
    rr_sd_bpm: float = 0.8  # breath-rate variability
    breath_depth: float = 1.0  # relative tidal volume (scales chest/head motion)
    complete_blink_fraction: float = 0.85
    smile_per_min: float = 2.0  # calm expressions
    frown_per_min: float = 4.0  # while tense


def sample_params(
    rng: np.random.Generator,
    base_hr_bpm: float | None = None,
    base_rr_bpm: float | None = None,
    base_blink_per_min: float | None = None,
) -> PhysiologyParams:
    """Draw a plausible healthy adult at rest (ranges in the module docstring)."""
    return PhysiologyParams(
        base_hr_bpm=float(base_hr_bpm if base_hr_bpm is not None else rng.uniform(58.0, 92.0)),
        base_rr_bpm=float(base_rr_bpm if base_rr_bpm is not None else rng.uniform(12.0, 19.0)),
        base_blink_per_min=float(base_blink_per_min if base_blink_per_min is not None else rng.uniform(14.0, 20.0)),
        tense_hr_delta_bpm=float(rng.uniform(12.0, 28.0)),
        tense_rr_delta_bpm=float(rng.uniform(4.0, 8.0)),
        tense_blink_factor=float(rng.uniform(1.5, 2.0)),
        rsa_pp_bpm=float(rng.uniform(3.0, 8.0)),
        lf_sd_bpm=float(rng.uniform(1.0, 2.5)),
        vlf_sd_bpm=float(rng.uniform(0.5, 1.5)),
        rr_sd_bpm=float(rng.uniform(0.4, 1.0)),
        breath_depth=float(rng.uniform(0.8, 1.2)),
    )


@dataclass
class PhysiologyTrack:
    """All time courses of one person over ``[0, duration_s]``; evaluate with the ``*_at`` methods."""

    params: PhysiologyParams
    duration_s: float
    episodes: list[tuple[float, float, str]]
    grid_t_s: np.ndarray
    tension: np.ndarray  # 0 calm .. 1 fully tense (lagged response to the episode script)
    hr_bpm: np.ndarray
    rr_bpm: np.ndarray
    cardiac_phase_cyc: np.ndarray  # integral of HR, beats
    resp_phase_cyc: np.ndarray  # integral of RR, breaths
    breath_amp: np.ndarray  # relative tidal volume over time
    beat_times_s: np.ndarray
    blinks: list[tuple[float, float, float]]  # (start, end, closure depth 0..1)
    expressions: list[tuple[float, float, str]] = field(default_factory=list)
    # A real recording as the pulse (hal_sim.face.real_ppg, set by :func:`with_real_pulse`): the
    # pulsatile part and the respiratory baseline wander on the grid, unit = median beat p-p.
    real_pulse_grid: np.ndarray | None = None
    real_wander_grid: np.ndarray | None = None
    real_pulse_info: dict[str, Any] | None = None

    # -- scalar/vector evaluation at arbitrary times
    def hr_at(self, t_s: np.ndarray) -> np.ndarray:
        return np.interp(t_s, self.grid_t_s, self.hr_bpm)

    def rr_at(self, t_s: np.ndarray) -> np.ndarray:
        return np.interp(t_s, self.grid_t_s, self.rr_bpm)

    def tension_at(self, t_s: np.ndarray) -> np.ndarray:
        return np.interp(t_s, self.grid_t_s, self.tension)

    def pulse_at(self, t_s: np.ndarray) -> np.ndarray:
        """Blood-volume pulse, zero mean, unit peak-to-peak (positive = more blood)."""
        if self.real_pulse_grid is not None:
            return np.interp(t_s, self.grid_t_s, self.real_pulse_grid)
        phase = np.interp(t_s, self.grid_t_s, self.cardiac_phase_cyc)
        return pulse_waveform(phase)

    def skin_blood_at(self, t_s: np.ndarray) -> np.ndarray:
        """Blood volume at the skin in units of the pulse's peak-to-peak: the pulse, its respiratory
        amplitude modulation (RIAV, -10 % at full inspiration) and the respiratory baseline shift
        (RIIV, venous volume falling on inspiration, ~0.25 of the pulse) - the respiratory
        modulations of the PPG reviewed by Meredith et al. 2012 (J Med Eng Technol 36:1) and used
        by Karlen et al. 2013 (IEEE TBME 60:1946).

        With a real recording as the pulse, its own amplitude modulation and baseline wander are
        used instead (they come with the recording, see :mod:`hal_sim.face.real_ppg`)."""
        if self.real_pulse_grid is not None and self.real_wander_grid is not None:
            return np.interp(t_s, self.grid_t_s, self.real_pulse_grid + self.real_wander_grid)
        b = self.breath_at(t_s) - 0.5
        return self.pulse_at(t_s) * (1.0 - 0.2 * b) - 0.25 * b

    def breath_at(self, t_s: np.ndarray) -> np.ndarray:
        """Chest displacement 0 (end of expiration) .. ~1 (end of inspiration), times tidal depth."""
        phase = np.interp(t_s, self.grid_t_s, self.resp_phase_cyc)
        return respiration_waveform(phase) * np.interp(t_s, self.grid_t_s, self.breath_amp)

    def eye_openness_at(self, t_s: np.ndarray) -> np.ndarray:
        """1 open .. 0 closed.  Closing takes ~30 % of a blink, reopening is slower (Caffier 2003)."""
        t = np.atleast_1d(np.asarray(t_s, dtype=float))
        out = np.ones_like(t)
        for start, end, depth in self._events_near(self.blinks, t, 0.4):
            sel = (t >= start) & (t <= end)
            if np.any(sel):
                u = (t[sel] - start) / (end - start)
                out[sel] = np.minimum(out[sel], 1.0 - depth * lid_closure(u))
        return out

    def expression_at(self, t_s: np.ndarray) -> dict[str, np.ndarray]:
        """Activation 0..1 of each expression kind ("smile", "frown", "brow_raise") at ``t_s``."""
        t = np.atleast_1d(np.asarray(t_s, dtype=float))
        out = {k: np.zeros_like(t) for k in ("smile", "frown", "brow_raise")}
        ramp_s = 0.4
        for start, end, kind in self._events_near(self.expressions, t, 6.0):
            rise = np.clip((t - start) / ramp_s, 0.0, 1.0)
            fall = np.clip((end - t) / ramp_s, 0.0, 1.0)
            env = 0.5 - 0.5 * np.cos(np.pi * np.minimum(rise, fall))
            out[kind] = np.maximum(out[kind], env)
        return out

    @staticmethod
    def _events_near(events: list, t: np.ndarray, max_len_s: float) -> list:
        """The events (sorted by start, at most ``max_len_s`` long) that can overlap times ``t``:
        a camera running for an hour must not scan every blink for every frame."""
        if not events or t.size == 0:
            return []
        starts = [e[0] for e in events]
        lo = int(np.searchsorted(starts, float(t.min()) - max_len_s, side="left"))
        hi = int(np.searchsorted(starts, float(t.max()), side="right"))
        return events[lo:hi]

    def state_at(self, t_s: np.ndarray) -> list[str]:
        t = np.atleast_1d(np.asarray(t_s, dtype=float))
        tense = np.zeros(t.shape, dtype=bool)
        for start, end, label in self.episodes:
            if label == STATE_TENSE:
                tense |= (t >= start) & (t < end)
        return [STATE_TENSE if x else STATE_CALM for x in tense]

    def blink_intervals(self) -> list[tuple[float, float]]:
        return [(s, e) for s, e, _ in self.blinks]


# --------------------------------------------------------------------------- waveforms
def _pulse_table(n: int = 2048) -> np.ndarray:
    phi = np.arange(n) / n
    wave = np.zeros(n)
    # (centre phase, width, amplitude): systolic and diastolic waves, wrapped over neighbours.
    for mu, sigma, amp in ((0.22, 0.075, 1.0), (0.52, 0.11, 0.45)):
        for k in (-1.0, 0.0, 1.0):
            wave += amp * np.exp(-0.5 * ((phi - mu - k) / sigma) ** 2)
    wave -= wave.mean()
    return wave / (wave.max() - wave.min())


_PULSE_TABLE = _pulse_table()


def pulse_waveform(phase_cyc: np.ndarray) -> np.ndarray:
    """Blood-volume pulse at cardiac phase (cycles); zero mean, unit peak-to-peak."""
    frac = np.mod(phase_cyc, 1.0) * _PULSE_TABLE.size
    i0 = np.floor(frac).astype(np.int64)
    w = frac - i0
    i1 = (i0 + 1) % _PULSE_TABLE.size
    i0 %= _PULSE_TABLE.size
    return _PULSE_TABLE[i0] * (1.0 - w) + _PULSE_TABLE[i1] * w


def respiration_waveform(phase_cyc: np.ndarray) -> np.ndarray:
    """Lung volume 0..1 over one breath: faster inspiration, slower passive expiration."""
    phi = np.mod(phase_cyc, 1.0)
    insp = phi < _INSPIRATION_FRACTION
    out = np.empty_like(phi, dtype=float)
    out[insp] = 0.5 - 0.5 * np.cos(np.pi * phi[insp] / _INSPIRATION_FRACTION)
    u = (phi[~insp] - _INSPIRATION_FRACTION) / (1.0 - _INSPIRATION_FRACTION)
    out[~insp] = 0.5 + 0.5 * np.cos(np.pi * u)
    return out


def lid_closure(u: np.ndarray) -> np.ndarray:
    """Lid closure 0..1 over normalised blink time u in [0, 1]: close 30 %, hold 10 %, reopen 60 %."""
    u = np.asarray(u, dtype=float)
    c = np.zeros_like(u)
    a = u < 0.3
    c[a] = 0.5 - 0.5 * np.cos(np.pi * u[a] / 0.3)
    c[(u >= 0.3) & (u < 0.4)] = 1.0
    b = u >= 0.4
    c[b] = 0.5 + 0.5 * np.cos(np.pi * np.clip((u[b] - 0.4) / 0.6, 0.0, 1.0))
    return c


# --------------------------------------------------------------------------- noise processes
def _gaussian_peak_noise(rng: np.random.Generator, n: int, fs: float, f0: float, width: float) -> np.ndarray:
    """Zero-mean unit-SD noise with a Gaussian spectral peak (ECGSYN's method, McSharry 2003)."""
    nfft = max(int(2 ** np.ceil(np.log2(max(n, 2)))), 1024)
    f = np.fft.rfftfreq(nfft, 1.0 / fs)
    amp = np.exp(-0.5 * ((f - f0) / width) ** 2)
    spec = amp * np.exp(2j * np.pi * rng.random(f.size))
    x = np.fft.irfft(spec, nfft)[:n]
    sd = x.std()
    return x / sd if sd > 0 else x


def _pink_noise(rng: np.random.Generator, n: int, fs: float, f_lo: float, f_hi: float) -> np.ndarray:
    """Zero-mean unit-SD 1/f noise band-limited to [f_lo, f_hi] (VLF heart-rate drift)."""
    nfft = max(int(2 ** np.ceil(np.log2(max(n, 2)))), 1024)
    f = np.fft.rfftfreq(nfft, 1.0 / fs)
    amp = np.zeros_like(f)
    band = (f >= f_lo) & (f <= f_hi)
    amp[band] = 1.0 / np.sqrt(f[band])
    if not np.any(band):  # clip shorter than the band's period: fall back to the lowest bins
        amp[1:3] = 1.0
    spec = amp * np.exp(2j * np.pi * rng.random(f.size))
    x = np.fft.irfft(spec, nfft)[:n]
    sd = x.std()
    return x / sd if sd > 0 else x


def _tension_response(t: np.ndarray, episodes: list[tuple[float, float, str]],
                      rise_tau_s: float = 8.0, fall_tau_s: float = 25.0) -> np.ndarray:
    """First-order lagged response to the scripted tense episodes, evaluated on grid ``t``."""
    target = np.zeros_like(t)
    for start, end, label in episodes:
        if label == STATE_TENSE:
            target[(t >= start) & (t < end)] = 1.0
    if not np.any(target):
        return target
    # Coarse 10 Hz recursion (cheap in Python), then interpolate onto the grid.
    dt = 0.1
    tc = np.arange(t[0], t[-1] + dt, dt)
    tgt_c = np.interp(tc, t, target)
    out = np.empty_like(tc)
    level = 0.0
    a_rise = 1.0 - np.exp(-dt / rise_tau_s)
    a_fall = 1.0 - np.exp(-dt / fall_tau_s)
    for i, g in enumerate(tgt_c):
        level += (a_rise if g > level else a_fall) * (g - level)
        out[i] = level
    return np.interp(t, tc, out)


# --------------------------------------------------------------------------- simulation
def simulate_physiology(
    params: PhysiologyParams,
    duration_s: float,
    episodes: list[tuple[float, float, str]],
    rng: np.random.Generator,
    *,
    expressions: bool = True,
    pre_roll_s: float = 2.0,
) -> PhysiologyTrack:
    """Simulate one person over ``[0, duration_s]`` (plus a little margin for jittered frames).

    ``episodes`` are (start_s, end_s, "tense") script entries; outside them the person is calm.
    """
    if duration_s <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    for ep in episodes:
        if len(ep) < 3 or ep[1] <= ep[0] or ep[2] not in (STATE_TENSE, STATE_CALM):
            raise ValueError(f"bad episode {ep!r}: need (start_s, end_s > start_s, 'tense'|'calm')")
    p = params
    t_end = duration_s + pre_roll_s
    n = int(np.ceil(t_end * GRID_HZ)) + 1
    t = np.arange(n) / GRID_HZ
    tension = _tension_response(t, episodes)

    # Respiration rate and phase; tension makes breathing faster and shallower.
    rr = p.base_rr_bpm + tension * p.tense_rr_delta_bpm
    rr = rr + p.rr_sd_bpm * _pink_noise(rng, n, GRID_HZ, 0.005, 0.1)
    rr = np.clip(rr, 6.0, 40.0)
    resp_phase = np.concatenate([[rng.random()], np.cumsum(rr[:-1] / 60.0 / GRID_HZ)])
    resp_phase[1:] += resp_phase[0]
    breath_amp = p.breath_depth * (1.0 - 0.25 * tension) * (1.0 + 0.12 * _pink_noise(rng, n, GRID_HZ, 0.01, 0.2))

    # Heart rate: baseline + tension + RSA (locked to breathing, lagging ~0.1 cycle) + LF + VLF.
    rsa_pp = p.rsa_pp_bpm * (1.0 - 0.5 * tension) * np.clip(15.0 / rr, 0.5, 1.5)
    rsa = rsa_pp * (respiration_waveform(resp_phase - 0.1) - 0.5)
    lf = p.lf_sd_bpm * _gaussian_peak_noise(rng, n, GRID_HZ, 0.1, 0.01)
    vlf = p.vlf_sd_bpm * _pink_noise(rng, n, GRID_HZ, 0.003, 0.04)
    hr = p.base_hr_bpm + tension * p.tense_hr_delta_bpm + rsa + lf + vlf
    hr = np.clip(hr, 35.0, 200.0)
    cardiac_phase = rng.random() + np.concatenate([[0.0], np.cumsum(hr[:-1] / 60.0 / GRID_HZ)])

    # Beats: integer crossings of the cardiac phase.
    k = np.arange(np.ceil(cardiac_phase[0]), np.floor(cardiac_phase[-1]) + 1)
    beats = np.interp(k, cardiac_phase, t)

    blinks = _blink_schedule(p, t, tension, rng)
    expr = _expression_schedule(p, t, tension, rng) if expressions else []
    return PhysiologyTrack(
        params=p, duration_s=float(duration_s), episodes=[(float(a), float(b), str(c)) for a, b, c, *_ in episodes],
        grid_t_s=t, tension=tension, hr_bpm=hr, rr_bpm=rr, cardiac_phase_cyc=cardiac_phase,
        resp_phase_cyc=resp_phase, breath_amp=breath_amp, beat_times_s=beats, blinks=blinks, expressions=expr,
    )


def with_real_pulse(track: PhysiologyTrack, pulse: RealPulse) -> PhysiologyTrack:
    """``track`` with its heart replaced by a real recording (:mod:`hal_sim.face.real_ppg`).

    Heart rate, cardiac phase, beat times and the pulse waveform come from the recording;
    breathing, blinks and expressions stay as simulated.  The recording does not respond to
    tension, so a clip with tense episodes cannot use it (``ClipSpec.validate`` refuses).
    """
    t = track.grid_t_s
    p_t = pulse.t_s
    if p_t[-1] < t[-1] - 1.0 / GRID_HZ:
        raise ValueError(f"real pulse covers {p_t[-1]:.2f} s, the track needs {t[-1]:.2f} s")
    beats = pulse.beat_times_s[(pulse.beat_times_s >= t[0]) & (pulse.beat_times_s <= t[-1])]
    return replace(
        track,
        params=replace(track.params, base_hr_bpm=float(pulse.info.get("target_hr_bpm", np.nan))),
        hr_bpm=pulse.hr_bpm(t),
        cardiac_phase_cyc=pulse.cardiac_phase(t),
        beat_times_s=beats,
        real_pulse_grid=np.interp(t, p_t, pulse.pulse),
        real_wander_grid=np.interp(t, p_t, pulse.wander),
        real_pulse_info=dict(pulse.info),
    )


def _blink_schedule(p: PhysiologyParams, t: np.ndarray, tension: np.ndarray,
                    rng: np.random.Generator) -> list[tuple[float, float, float]]:
    """Renewal process with gamma(k=2) inter-blink intervals in rate-rescaled time.

    Time rescaling (operational time = integral of the instantaneous rate) lets the blink rate
    follow tension without breaking the interval distribution.  A blink never starts within
    0.3 s of the previous one ending.
    """
    rate_per_s = p.base_blink_per_min * (1.0 + (p.tense_blink_factor - 1.0) * tension) / 60.0
    op = np.concatenate([[0.0], np.cumsum(rate_per_s[:-1]) / GRID_HZ])
    out: list[tuple[float, float, float]] = []
    u = rng.uniform(0.0, 1.0)  # first blink anywhere in the first mean interval
    last_end = -1.0
    while True:
        if u > op[-1]:
            break
        start = float(np.interp(u, op, t))
        start = max(start, last_end + 0.3)
        duration = float(np.clip(rng.lognormal(np.log(0.2), 0.3), 0.1, 0.4))
        end = start + duration
        if end > t[-1]:
            break
        depth = 1.0 if rng.random() < p.complete_blink_fraction else float(rng.uniform(0.6, 0.9))
        out.append((start, end, depth))
        last_end = end
        u = float(np.interp(start, t, op)) + rng.gamma(2.0, 0.5)
    return out


def _expression_schedule(p: PhysiologyParams, t: np.ndarray, tension: np.ndarray,
                         rng: np.random.Generator) -> list[tuple[float, float, str]]:
    """Poisson expression events: smiles and brow raises when calm, frowns (AU4) when tense."""
    out: list[tuple[float, float, str]] = []
    dt = 0.5
    for tc in np.arange(0.0, t[-1], dt):
        ten = float(np.interp(tc, t, tension))
        if rng.random() < p.smile_per_min / 60.0 * dt * (1.0 - ten):
            out.append((tc, tc + rng.uniform(1.0, 3.0), "smile"))
        if rng.random() < 1.0 / 60.0 * dt * (1.0 - ten):
            out.append((tc, tc + rng.uniform(0.6, 1.5), "brow_raise"))
        if rng.random() < p.frown_per_min / 60.0 * dt * ten:
            out.append((tc, tc + rng.uniform(2.0, 6.0), "frown"))
    return out
