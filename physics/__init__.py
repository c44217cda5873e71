"""What cfgphase simulates: processes, mixtures, the Gaussian pair, models, weight conventions,
schedules, guidance rules and the names of the statistics. Declarations and exact formulas only,
no I/O; installed as ``cfgphase.physics``."""
