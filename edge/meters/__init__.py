"""Meter drivers for the gateway (CPython): Modbus RTU/TCP through pymodbus, DSMR P1 through
pyserial, read planning, bus discipline, health and the field-technician commands."""
