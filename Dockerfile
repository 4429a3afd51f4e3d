# The zoo's model server as a container: a drop-in for tensorflow/serving.
#   docker build -t tfzoo .
#   docker run -p 8500:8500 -p 8501:8501 -v $PWD/models:/models tfzoo
# (Not built in CI: the CI machines have no Docker engine.)
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /app
COPY pyproject.toml README.md ./
COPY zoo ./zoo
COPY training ./training
COPY serving ./serving
RUN pip install --no-cache-dir .

EXPOSE 8500 8501
VOLUME ["/models"]
# Same flags as tensorflow_model_server; override MODEL_NAME or pass --model_config_file.
ENV MODEL_NAME=model
ENTRYPOINT ["sh", "-c", "exec zoo serve --port=8500 --rest_api_port=8501 --model_name=${MODEL_NAME} --model_base_path=/models/${MODEL_NAME} \"$@\"", "--"]
