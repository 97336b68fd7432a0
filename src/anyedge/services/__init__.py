"""anyedge's services on the anycast address: the IO around the sans-IO protocol cores
of :mod:`anyedge.proto` (today the TURN relay, :mod:`.turn`)."""
