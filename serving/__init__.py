"""A TensorFlow Serving-compatible model server (gRPC + REST) for SavedModels.

Layout follows TF Serving's split: `repository` (source + version policy), `servable`
(loader), `manager` (aspired versions, availability-preserving swaps), `batching`,
`predict` (the one protocol-neutral core), and thin `grpc_server` / `rest_server` front ends.
"""
