# ibgateway: the gRPC gateway to Interactive Brokers.
#
#   docker build -t ibgateway .
#   docker run --rm -p 50051:50051 ibgateway                      # embedded TWS simulator
#   docker run --rm -p 50051:50051 -e IBGW_BACKEND=tws \
#       -e IBKR_HOST=host.docker.internal -e IBKR_PORT=7497 \
#       --add-host=host.docker.internal:host-gateway ibgateway      # TWS on the host

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server ./server
COPY client_stubs/python ./client_stubs/python
# wheels of the client package, the gateway and every dependency, so the runtime stage
# installs offline (the gateway depends on ibgateway-client, which is not on PyPI)
RUN pip wheel --no-cache-dir --wheel-dir /wheels ./client_stubs/python \
    && pip wheel --no-cache-dir --wheel-dir /wheels --find-links /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    IBGW_LISTEN=0.0.0.0:50051
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels ibgateway \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin ibgw
USER 10001
EXPOSE 50051
# liveness: the gRPC health service's process status (plaintext listener only)
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
    CMD ["python", "-c", "import sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; s = g.HealthStub(grpc.insecure_channel('127.0.0.1:50051')).Check(h.HealthCheckRequest(), timeout=3).status; sys.exit(0 if s == h.HealthCheckResponse.SERVING else 1)"]
ENTRYPOINT ["ibgw"]
CMD ["serve", "--listen", "0.0.0.0:50051"]
