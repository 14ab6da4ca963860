"""The pieces every pushscale program shares, below all of them: flag ↔ environment-variable
options (`options`), how a long-running program starts and reports ready (`program`), the one
progress bar (`progress`) and a small socket.io client for the demo and the benches
(`sioclient`). Nothing here imports a program (`pushscale`, `pushserver`, `adapter`)."""
