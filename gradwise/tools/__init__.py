"""Tools around the loop: one step made visible (``step_*``), the learning-rate range test (``lr_find``) and
corpus statistics (``data_stats``). Each runs what training runs, assembled by ``gradwise.training.build``."""
