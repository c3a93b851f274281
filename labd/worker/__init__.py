"""What runs inside a set's worker processes: the entry point (:mod:`.process`), the
contexts a mechanism's loops get (:mod:`.contexts`), the shared tally board
(:mod:`.board`) and tick pacing (:mod:`.pacing`).

Standard library only, and preloaded by the forkserver, so every worker starts from a
warm image: importing it pulls in no rpyc, psutil, sqlite3, click or cryptography
(tests/test_layout.py).
"""
