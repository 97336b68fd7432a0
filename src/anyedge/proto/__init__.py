"""Wire protocols, sans-IO: bytes in, events out, time passed in.

Nothing here opens a socket or reads a clock.  :mod:`anyedge.proto.stun` is the STUN
message codec (RFC 8489) with TURN's attributes and ChannelData framing (RFC 8656);
:mod:`anyedge.proto.turn` is the TURN server state machine built on it.  The services
layer owns the sockets and the timers and feeds these cores.
"""
