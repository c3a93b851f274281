"""Who may call labd and how: the rpyc service (:mod:`.service`), the listeners
(:mod:`.listener`), the rpyc server subclass (:mod:`.rpyc_server`), the authenticators
(:mod:`.auth`), socket access for other users (:mod:`.access`) and TLS at run time
(:mod:`.tls`). The only package of labd that imports rpyc (tests/test_layout.py)."""
