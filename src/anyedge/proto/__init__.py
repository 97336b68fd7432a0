"""Wire protocols, sans-IO: bytes in, events out, time passed in.

Nothing here opens a socket or reads a clock.  :mod:`anyedge.proto.stun` is the STUN
message codec (RFC 8489) with TURN's attributes and ChannelData framing (RFC 8656);
:mod:`anyedge.proto.turn` is the TURN server state machine built on it;
:mod:`anyedge.proto.ike` is an IKEv2 responder and :mod:`anyedge.proto.esp` ESP with
AES-GCM.  The layers above own the sockets and the timers and feed these cores.
"""
