"""The Monsoon power monitor (LVPM) on a serial port: protocol (bytes), status and stream
(decoding), driver (the port and its threads), discovery (finding units)."""
