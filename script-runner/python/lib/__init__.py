"""PuyPuy's compatibility package for the old agent's Python check modules.

Written anew for the Rust agent: the modules in checks_enabled/ import lib.basecheck, lib.pushdata,
lib.getconfig, lib.commonclient, lib.puylogger, lib.record_rate and lib.sharedvars (or, in the old
README's style, append a lib folder to sys.path and __import__('pushdata')) and run unchanged inside
puypuy_host.py, which the script-runner starts and supervises. Nothing here talks to a backend:
points go back to the runner, which hands them to the shipper.
"""
