"""Training: the one assembly of the step (``build``), the step itself (``step``), the loop around it
(``loop``), a whole run (``run``), data parallelism (``distributed``), fp8 and the FLOP meter."""
