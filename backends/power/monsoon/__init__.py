"""The Monsoon power monitor on a serial port: protocol, discovery and driver."""
