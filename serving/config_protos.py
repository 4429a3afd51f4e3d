"""TF Serving config messages that the `tensorflow-serving-api` wheel does not ship.

`BatchingParameters` (servables/tensorflow/session_bundle_config.proto), `MonitoringConfig`
(config/monitoring_config.proto) and `SSLConfig` (config/ssl_config.proto) are rebuilt here from their field lists so that the text-format
files written for `tensorflow_model_server` parse with the same names and types.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

_F = descriptor_pb2.FieldDescriptorProto
_pool = descriptor_pool.DescriptorPool()
_pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)


def _build() -> None:
    fd = descriptor_pb2.FileDescriptorProto(
        name="zoo_serving/tf_serving_configs.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    batching = fd.message_type.add(name="BatchingParameters")
    wrapped = [
        ("max_batch_size", 1, ".google.protobuf.Int64Value"),
        ("batch_timeout_micros", 2, ".google.protobuf.Int64Value"),
        ("max_enqueued_batches", 3, ".google.protobuf.Int64Value"),
        ("num_batch_threads", 4, ".google.protobuf.Int64Value"),
        ("thread_pool_name", 5, ".google.protobuf.StringValue"),
        ("enable_large_batch_splitting", 9, ".google.protobuf.BoolValue"),
        ("max_execution_batch_size", 10, ".google.protobuf.Int64Value"),
    ]
    for name, number, type_name in wrapped:
        batching.field.add(
            name=name,
            number=number,
            type=_F.TYPE_MESSAGE,
            type_name=type_name,
            label=_F.LABEL_OPTIONAL,
        )
    batching.field.add(
        name="allowed_batch_sizes", number=6, type=_F.TYPE_INT64, label=_F.LABEL_REPEATED
    )
    batching.field.add(
        name="pad_variable_length_inputs", number=7, type=_F.TYPE_BOOL, label=_F.LABEL_OPTIONAL
    )
    batching.field.add(
        name="batch_padding_policy", number=8, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL
    )
    prom = fd.message_type.add(name="PrometheusConfig")
    prom.field.add(name="enable", number=1, type=_F.TYPE_BOOL, label=_F.LABEL_OPTIONAL)
    prom.field.add(name="path", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    mon = fd.message_type.add(name="MonitoringConfig")
    mon.field.add(
        name="prometheus_config",
        number=1,
        type=_F.TYPE_MESSAGE,
        type_name=".tensorflow.serving.PrometheusConfig",
        label=_F.LABEL_OPTIONAL,
    )
    ssl = fd.message_type.add(name="SSLConfig")
    for name, number, kind in (
        ("server_key", 1, _F.TYPE_STRING),
        ("server_cert", 2, _F.TYPE_STRING),
        ("custom_ca", 3, _F.TYPE_STRING),
        ("client_verify", 4, _F.TYPE_BOOL),
    ):
        ssl.field.add(name=name, number=number, type=kind, label=_F.LABEL_OPTIONAL)
    _pool.Add(fd)


_build()
BatchingParameters = message_factory.GetMessageClass(
    _pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
)
MonitoringConfig = message_factory.GetMessageClass(
    _pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")
)
SSLConfig = message_factory.GetMessageClass(
    _pool.FindMessageTypeByName("tensorflow.serving.SSLConfig")
)
