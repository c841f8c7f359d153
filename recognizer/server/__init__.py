"""The TCP server: handshake gate, station sessions, trust (credentials, enrol grants), the sign-in face check."""
