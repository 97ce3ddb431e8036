# ibgateway: the gRPC gateway to Interactive Brokers.
#
#   docker build -t ibgateway .
#   docker run --rm -p 127.0.0.1:50051:50051 ibgateway           # embedded TWS simulator
#   docker run --rm -p 127.0.0.1:50051:50051 -e IBGW_BACKEND=tws \
#       -e IBKR_HOST=host.docker.internal -e IBKR_PORT=7497 \
#       --add-host=host.docker.internal:host-gateway ibgateway      # TWS on the host
#
# Every setting is an IBGW_* / IBKR_* variable (the command line sets none, so -e wins);
# publish ports on loopback unless TLS and tokens are on (see README, "Docker").

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
    IBGW_LISTEN=0.0.0.0:50051 \
    IBGW_METRICS_HOST=0.0.0.0 \
    IBGW_METRICS_PORT=9464 \
    IBGW_STATE_DIR=/var/lib/ibgateway
COPY --from=build /wheels /wheels
# the wheels built above, exactly those versions (no index is consulted)
RUN pip install --no-cache-dir --no-index /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --system --user-group --uid 10001 --no-create-home --shell /usr/sbin/nologin ibgw \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/ibgateway
# the order-event journal (backend tws): keep it on a volume so a new container resumes
VOLUME ["/var/lib/ibgateway"]
USER 10001:10001
# gRPC, Prometheus /metrics
EXPOSE 50051 9464
# liveness: the gRPC health service's process status, at IBGW_LISTEN and with the TLS
# settings the gateway itself uses (IBGW_TLS_*; IBGW_TLS_CA / IBGW_TLS_CLIENT_* when needed)
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
    CMD ["ibgw", "health", "--quiet"]
ENTRYPOINT ["ibgw"]
CMD ["serve"]
