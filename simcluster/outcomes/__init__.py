"""From simulated throughput to decisions: scaling laws (``laws``), time, cost and energy to a target
(``economics``), diminishing returns of adding GPUs (``returns``) and which constraint binds over the years
(``projection``). Pure functions of summaries; no engine."""
