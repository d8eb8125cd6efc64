"""How the work is split over ranks: the layout and its groups (``layout``), pipeline schedules
(``schedules``), per-GPU memory of a layout (``memory``) and the per-stage program of one step (``plan``).
Pure: collective times reach the plan as a function the engine supplies."""
