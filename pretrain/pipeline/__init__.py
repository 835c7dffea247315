"""The pipeline behind ``pretrain-pipeline``: recipes (``recipe``), the stages and their commands and jobs
(``stages``), stamps (``stamps``), which stages run (``status``), and running them here (``local``) or
submitting them to Slurm (``slurm``)."""
