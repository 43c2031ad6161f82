"""MedMNIST-C corruptions (batched, seeded per image) and the shift benchmark.

Each corruption's module is imported when the corruption is first used (``medaudit.registries``);
``corrupt.corrupt`` applies one. Importing this package imports nothing else, so the catalogue
(severities, parameters) is read without torch."""
