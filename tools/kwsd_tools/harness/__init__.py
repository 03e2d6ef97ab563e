"""Real parts for tests and the soak: a mosquitto broker on a free loopback port
(:mod:`kwsd_tools.harness.broker`) and PortAudio capture from ALSA devices backed by files,
FIFOs or a JACK dummy server (:mod:`kwsd_tools.harness.alsa`)."""
