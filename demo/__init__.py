"""The flowproject demo: real SensorFlow runs against loopback stand-ins (``python -m demo``)."""
