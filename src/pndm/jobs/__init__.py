"""What ``pndm sample`` and ``pndm pack`` run: the job (`job`), what a model folder decides before
loading (`plan`), the run over ranks and batches (`run`), where images go (`destinations`), the
folder manifest (`manifest`), seeds (`seeds`), torchrun ranks (`ranks`) and packing (`pack`)."""
