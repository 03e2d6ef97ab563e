"""Audio sources for the listener: the :class:`AudioSource` seam and the microphone.

:class:`MicrophoneSource` captures through PortAudio (``sounddevice``, imported only when a
device is listed or opened, so ``import kwsd.sources`` stays cheap and works without
libportaudio2). Two threads touch it:

* PortAudio's callback thread runs :meth:`MicrophoneSource._callback`, which only copies the
  block onto a bounded queue and counts overflows and drops: no numpy arithmetic, no
  logging, no I/O, nothing that can block.
* The listener thread calls :meth:`MicrophoneSource.read`, which takes a block off the queue,
  picks or mixes channels, resamples (``soxr.ResampleStream``, quality HQ, on float32) when
  the device runs at another rate than the model, and returns mono int16 at
  ``sample_rate_hz``.

Conversion follows :mod:`kwsd.audio`'s rule: one picked channel at the target rate is passed
through bit-exact; otherwise samples are scaled to full scale 1.0, channels averaged,
resampled, then multiplied by 32768, rounded half to even and clipped (``float_to_int16``).

PortAudio enumerates devices once, when it is initialised. A USB microphone plugged in later
(or re-plugged under another card number) is only seen after a re-scan, so opening a
:class:`MicrophoneSource` re-scans first whenever no stream is open and the list is not fresh.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Protocol, Self

import numpy as np
import numpy.typing as npt

from kwsd.audio import float_to_int16
from kwsd.errors import KwsdError
from kwsd.frontend import INT16_FULL_SCALE

log = logging.getLogger(__name__)

Int16Array = npt.NDArray[np.int16]

#: The rates a capture device is probed for (``kwsd devices``, :attr:`DeviceInfo.supported_rates_hz`).
STANDARD_RATES_HZ: Final = (8000, 16000, 22050, 32000, 44100, 48000)

#: ``channel`` value that averages all opened channels.
MIX: Final = "mix"

_SAMPLE_DTYPE: Final = "int16"


class AudioDeviceError(KwsdError):
    """A capture device that is missing, ambiguous or unusable; the message lists what exists."""


class AudioSource(Protocol):
    """Where the listener gets its audio. Read from one thread only."""

    #: Rate of the blocks :meth:`read` returns, in Hz.
    sample_rate_hz: int

    def read(self, timeout_s: float) -> Int16Array | None:
        """The next mono int16 block at ``sample_rate_hz``; None if nothing arrived in ``timeout_s``.

        Raises :class:`AudioDeviceError` when the source has failed for good (the caller may
        close it and open a new one).
        """
        ...

    def close(self) -> None:
        """Release the device. Idempotent."""
        ...


@dataclass(frozen=True)
class DeviceInfo:
    """A capture device as PortAudio reports it."""

    index: int
    name: str
    max_input_channels: int
    default_rate_hz: int
    #: Those of :data:`STANDARD_RATES_HZ` that PortAudio accepts for 16-bit capture (with one
    #: channel, or two for a device that refuses mono). Empty if the device is busy.
    supported_rates_hz: tuple[int, ...]

    def describe(self) -> str:
        """One line, e.g. ``[2] USB PnP Sound Device: Audio (hw:1,0): 1 in, default 48000 Hz,
        supports 44100, 48000 Hz``."""
        channels = f"{self.max_input_channels} in"
        if self.supported_rates_hz:
            rates = "supports " + ", ".join(str(rate) for rate in self.supported_rates_hz) + " Hz"
        else:
            rates = "supports none of " + ", ".join(str(r) for r in STANDARD_RATES_HZ) + " Hz (busy?)"
        return f"[{self.index}] {self.name}: {channels}, default {self.default_rate_hz} Hz, {rates}"


# --------------------------------------------------------------------------------------
# PortAudio access.


class _PortAudioState:
    """What this process knows about PortAudio's device list. Guarded by ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: Streams open in this process (PortAudio cannot re-scan while one is open).
        self.open_streams = 0
        #: True while the device list is the one PortAudio made when it was initialised and no
        #: source has been opened since: the next open need not re-scan.
        self.list_is_fresh = False


_portaudio = _PortAudioState()


def _sounddevice() -> Any:
    """The ``sounddevice`` module, imported on first use (that import enumerates the devices)."""
    import sys

    first = "sounddevice" not in sys.modules
    try:
        import sounddevice
    except OSError as err:  # sounddevice raises OSError when libportaudio is missing
        raise AudioDeviceError(
            f"PortAudio is not available ({err}); install it with: sudo apt install libportaudio2"
        ) from None
    if first:
        with _portaudio.lock:
            _portaudio.list_is_fresh = True
    return sounddevice


def rescan_devices() -> bool:
    """Re-enumerate the devices (PortAudio only sees those present when it was initialised).

    Does nothing and returns False while a stream is open in this process: re-initialising
    PortAudio would close it.
    """
    sd = _sounddevice()
    with _portaudio.lock:
        if _portaudio.open_streams:
            return False
        sd._terminate()
        sd._initialize()
        _portaudio.list_is_fresh = True
    log.debug("re-scanned the audio devices")
    return True


def _rescan_unless_fresh() -> None:
    """Re-scan before an open, unless the list was made since the last open (saves a scan at start)."""
    with _portaudio.lock:
        fresh = _portaudio.list_is_fresh
        _portaudio.list_is_fresh = False
    if not fresh:
        rescan_devices()
        with _portaudio.lock:
            _portaudio.list_is_fresh = False


def _capture_device_dicts(sd: Any) -> list[dict[str, Any]]:
    devices: Sequence[dict[str, Any]] = sd.query_devices()
    return [dict(d, index=i) for i, d in enumerate(devices) if int(d["max_input_channels"]) > 0]


def _rate_ok(sd: Any, index: int, rate_hz: int, channels: int) -> bool:
    try:
        sd.check_input_settings(device=index, channels=channels, dtype=_SAMPLE_DTYPE, samplerate=rate_hz)
    except (sd.PortAudioError, ValueError):
        return False
    return True


def _supported_rates(sd: Any, index: int, max_input_channels: int) -> tuple[int, ...]:
    rates = []
    for rate in STANDARD_RATES_HZ:
        if _rate_ok(sd, index, rate, 1) or (
            max_input_channels > 1 and _rate_ok(sd, index, rate, min(2, max_input_channels))
        ):
            rates.append(rate)
    return tuple(rates)


def _device_info(sd: Any, device: dict[str, Any]) -> DeviceInfo:
    index = int(device["index"])
    max_channels = int(device["max_input_channels"])
    return DeviceInfo(
        index=index,
        name=str(device["name"]),
        max_input_channels=max_channels,
        default_rate_hz=round(float(device["default_samplerate"])),
        supported_rates_hz=_supported_rates(sd, index, max_channels),
    )


def list_devices() -> list[DeviceInfo]:
    """Every capture device PortAudio sees, with the standard rates each one accepts.

    Probing the rates opens each device briefly; a device in use elsewhere may list none.
    """
    sd = _sounddevice()
    return [_device_info(sd, device) for device in _capture_device_dicts(sd)]


#: What is said when PortAudio sees no capture device at all.
NO_CAPTURE_DEVICES = (
    "there are no capture devices (is the microphone plugged in, and is the user in the 'audio' group?)"
)


def _listing(devices: list[DeviceInfo]) -> str:
    if not devices:
        return NO_CAPTURE_DEVICES
    return "the capture devices are: " + "; ".join(device.describe() for device in devices)


def find_device(device: str | int | None) -> DeviceInfo:
    """The capture device named by ``device``.

    * None: the system's default input.
    * str: a case-insensitive part of the name; a name equal to it wins over names that only
      contain it; several candidates are an error that lists them.
    * int: the PortAudio index (as ``kwsd devices`` prints it).

    Raises :class:`AudioDeviceError` listing the capture devices there are.
    """
    sd = _sounddevice()
    candidates = _capture_device_dicts(sd)
    if device is None:
        try:
            default = sd.query_devices(kind="input")
        except sd.PortAudioError:
            raise AudioDeviceError(f"no default capture device; {_listing(list_devices())}") from None
        index = int(default.get("index", sd.default.device[0]))
        found = [d for d in candidates if d["index"] == index]
        if not found:
            raise AudioDeviceError(
                f"the default audio device [{index}] {default['name']} has no inputs; "
                f"{_listing(list_devices())}"
            )
        return _device_info(sd, found[0])
    if isinstance(device, bool) or not isinstance(device, (int, str)):
        raise TypeError(f"device: expected a name, an index or None, got {device!r}")
    if isinstance(device, int):
        found = [d for d in candidates if d["index"] == device]
        if not found:
            raise AudioDeviceError(f"no capture device with index {device}; {_listing(list_devices())}")
        return _device_info(sd, found[0])
    wanted = device.casefold()
    matches = [d for d in candidates if wanted in str(d["name"]).casefold()]
    exact = [d for d in matches if str(d["name"]).casefold() == wanted]
    if len(exact) == 1:
        return _device_info(sd, exact[0])
    if len(matches) == 1:
        return _device_info(sd, matches[0])
    if not matches:
        raise AudioDeviceError(f"no capture device matching {device!r}; {_listing(list_devices())}")
    names = "; ".join(_device_info(sd, d).describe() for d in matches)
    raise AudioDeviceError(
        f"{device!r} matches {len(matches)} capture devices: {names}; give more of the name, or the index"
    )


# --------------------------------------------------------------------------------------
# The microphone.


class MicrophoneSource:
    """A PortAudio capture stream as an :class:`AudioSource` (int16 mono at ``target_rate_hz``).

    Opens ``device`` (see :func:`find_device`) with ``channels`` channels at ``open_rate_hz``
    if given, else at ``target_rate_hz`` if the device takes it, else at the device's default
    rate (else at another standard rate it takes), and resamples to ``target_rate_hz``.
    ``channel`` picks one opened channel (0-based) or ``"mix"`` averages them. The callback
    delivers ``block_ms`` of audio at a time onto a queue of ``queue_blocks`` blocks; when
    the listener falls that far behind, new blocks are dropped and counted.

    Raises :class:`AudioDeviceError` naming the device and what it supports when it cannot
    be opened as asked. Counters (written by the callback thread, read by anyone):
    :attr:`overflows` (PortAudio input overflows) and :attr:`dropped_blocks`.
    """

    def __init__(
        self,
        device: str | int | None,
        target_rate_hz: int,
        *,
        open_rate_hz: int | None = None,
        channels: int = 1,
        channel: str | int = MIX,
        block_ms: int = 20,
        queue_blocks: int = 200,
    ) -> None:
        for name, value in (
            ("target_rate_hz", target_rate_hz),
            ("channels", channels),
            ("block_ms", block_ms),
            ("queue_blocks", queue_blocks),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if open_rate_hz is not None and (
            isinstance(open_rate_hz, bool) or not isinstance(open_rate_hz, int) or open_rate_hz <= 0
        ):
            raise ValueError(f"open_rate_hz: expected a positive integer or None, got {open_rate_hz!r}")
        self._channel_index = _channel_index(channel, channels)
        self._closed = True  # until the stream is open: close() does nothing before that
        self.sample_rate_hz = target_rate_hz
        self.overflows = 0
        self.dropped_blocks = 0

        sd = _sounddevice()
        _rescan_unless_fresh()
        self.device: DeviceInfo = find_device(device)
        what = self.device.describe()
        if channels > self.device.max_input_channels:
            raise AudioDeviceError(f"{what}: cannot open {channels} channels")
        self.channels = channels
        self.opened_rate_hz: int = self._choose_rate(sd, open_rate_hz, target_rate_hz)
        self.block_frames = max(1, self.opened_rate_hz * block_ms // 1000)
        self._queue: queue.Queue[npt.NDArray[np.int16]] = queue.Queue(maxsize=queue_blocks)
        self._resampler = _make_resampler(self.opened_rate_hz, target_rate_hz)
        try:
            self._stream = sd.InputStream(
                device=self.device.index,
                samplerate=self.opened_rate_hz,
                channels=channels,
                dtype=_SAMPLE_DTYPE,
                blocksize=self.block_frames,
                latency="high",
                callback=self._callback,
            )
        except sd.PortAudioError as err:
            raise AudioDeviceError(
                f"{what}: cannot open it at {self.opened_rate_hz} Hz with {channels} channel(s) ({err})"
            ) from None
        with _portaudio.lock:
            _portaudio.open_streams += 1
        self._closed = False
        try:
            self._stream.start()
        except sd.PortAudioError as err:
            self.close()
            raise AudioDeviceError(
                f"{what}: cannot start capturing at {self.opened_rate_hz} Hz "
                f"with {channels} channel(s) ({err})"
            ) from None
        log.info(
            "capturing from %s at %d Hz, %d channel(s), %s%s",
            self.device.name,
            self.opened_rate_hz,
            channels,
            "mixed" if self._channel_index is None else f"channel {self._channel_index}",
            "" if self._resampler is None else f", resampled to {target_rate_hz} Hz",
        )

    def _choose_rate(self, sd: Any, open_rate_hz: int | None, target_rate_hz: int) -> int:
        index, channels, info = self.device.index, self.channels, self.device
        if open_rate_hz is not None:
            if _rate_ok(sd, index, open_rate_hz, channels):
                return open_rate_hz
            raise AudioDeviceError(
                f"{info.describe()}: does not take {open_rate_hz} Hz with {channels} channel(s)"
            )
        preferred = [target_rate_hz, info.default_rate_hz]
        # Then the lowest standard rate above the target (least to resample), then the highest below.
        preferred += sorted(r for r in info.supported_rates_hz if r > target_rate_hz)
        preferred += sorted((r for r in info.supported_rates_hz if r < target_rate_hz), reverse=True)
        for rate in dict.fromkeys(preferred):
            if _rate_ok(sd, index, rate, channels):
                return rate
        raise AudioDeviceError(
            f"{info.describe()}: takes none of {target_rate_hz} Hz, its default rate or the "
            f"standard rates with {channels} channel(s)"
        )

    def _callback(self, indata: npt.NDArray[np.int16], frames: int, time_info: Any, status: Any) -> None:
        """PortAudio's thread: copy the block and count. Nothing else belongs here."""
        if status.input_overflow:
            self.overflows += 1
        try:
            self._queue.put_nowait(indata.copy())
        except queue.Full:
            self.dropped_blocks += 1

    def read(self, timeout_s: float) -> Int16Array | None:
        """The next mono int16 block at ``sample_rate_hz``, or None if none came in ``timeout_s``.

        Listener thread only. Returns None at once after :meth:`close`. Raises
        :class:`AudioDeviceError` once the queued audio is used up if PortAudio has stopped
        the stream on its own (a device unplugged or failing).
        """
        if self._closed:
            return None
        deadline = time.monotonic() + max(timeout_s, 0.0)
        while True:
            try:
                raw = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                if not self._closed and not self._stream.active:
                    raise AudioDeviceError(
                        f"{self.device.describe()}: the capture stream stopped (device unplugged or failing?)"
                    ) from None
                return None
            block = self._convert(raw)
            if block.size:  # the resampler may hold back the first few samples
                return block

    def _convert(self, raw: npt.NDArray[np.int16]) -> Int16Array:
        """(frames, channels) int16 at the opened rate -> mono int16 at the target rate."""
        if self._channel_index is not None:
            picked = np.ascontiguousarray(raw[:, self._channel_index])
            if self._resampler is None:
                return picked  # bit-exact
            mono = picked / INT16_FULL_SCALE
        else:
            mono = raw.mean(axis=1, dtype=np.float64) / INT16_FULL_SCALE
            if self._resampler is None:
                return float_to_int16(mono)
        return float_to_int16(self._resampler.resample_chunk(mono.astype(np.float32)))

    def close(self) -> None:
        """Stop capturing and release the device (pending blocks are discarded). Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._stream.close(ignore_errors=True)  # aborts: does not wait for a stalled device
        finally:
            with _portaudio.lock:
                _portaudio.open_streams -= 1
        log.info(
            "closed %s: %d input overflow(s), %d dropped block(s)",
            self.device.name,
            self.overflows,
            self.dropped_blocks,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _channel_index(channel: str | int, channels: int) -> int | None:
    """None to mix, else the 0-based channel to pick; a bad value raises ValueError."""
    if isinstance(channel, str) and channel == MIX:
        return None if channels > 1 else 0
    if isinstance(channel, bool) or not isinstance(channel, int):
        raise ValueError(f"channel: expected {MIX!r} or a channel number, got {channel!r}")
    if not 0 <= channel < channels:
        raise ValueError(f"channel: expected 0..{channels - 1} (of {channels} opened), got {channel}")
    return channel


def _make_resampler(source_rate_hz: int, target_rate_hz: int) -> Any:
    if source_rate_hz == target_rate_hz:
        return None
    import soxr  # only when resampling

    return soxr.ResampleStream(source_rate_hz, target_rate_hz, 1, dtype="float32", quality="HQ")
