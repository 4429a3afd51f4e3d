"""A TensorFlow Serving-compatible model server (gRPC + REST) for SavedModels.

Layout follows TF Serving's split: `repository` (source + version policy), `servable`
(loader), `manager` (aspired versions, availability-preserving swaps), `batching`,
`predict` (the one protocol-neutral core), and thin `grpc_server` / `rest_server` front ends
speaking TF Serving's API and, beside it, the Open Inference Protocol (`v2`); `request_log`
writes sampled requests as PredictionLogs.
"""

__version__ = "0.1.0"
