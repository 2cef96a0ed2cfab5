"""What ``pndm sample`` and ``pndm pack`` run: seeds, ranks, destinations, the folder manifest."""
