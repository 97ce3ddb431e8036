// The ibgateway Node client: the generated stubs (src/gen, `make node-stubs`), one place to
// open them on a channel, and the decoding of the gateway's rich errors.
import { credentials, ChannelCredentials, Metadata, ServiceError, status } from "@grpc/grpc-js";
import { AccountServiceClient } from "./gen/ibgateway/v1/account";
import { ConnectionServiceClient } from "./gen/ibgateway/v1/connection";
import { MarketDataServiceClient } from "./gen/ibgateway/v1/market_data";
import { OrderServiceClient } from "./gen/ibgateway/v1/orders";
import { PortfolioServiceClient } from "./gen/ibgateway/v1/portfolio";
import { BadRequest, ErrorInfo, RetryInfo } from "./gen/google/rpc/error_details";
import { Status } from "./gen/google/rpc/status";
import { Decimal } from "./gen/ibgateway/v1/common";

export * as account from "./gen/ibgateway/v1/account";
export * as common from "./gen/ibgateway/v1/common";
export * as connection from "./gen/ibgateway/v1/connection";
export * as marketData from "./gen/ibgateway/v1/market_data";
export * as orders from "./gen/ibgateway/v1/orders";
export * as portfolio from "./gen/ibgateway/v1/portfolio";

export interface GatewayOptions {
  /** Bearer token, sent as `authorization: Bearer <token>` on every call. */
  token?: string;
  /** TLS: the CA to trust (PEM); `true` for the system roots. */
  tls?: Buffer | true;
}

/** The five services on one channel. */
export interface Gateway {
  connection: ConnectionServiceClient;
  accounts: AccountServiceClient;
  portfolio: PortfolioServiceClient;
  marketData: MarketDataServiceClient;
  orders: OrderServiceClient;
  close(): void;
}

export function connect(address: string, options: GatewayOptions = {}): Gateway {
  let creds: ChannelCredentials = options.tls
    ? credentials.createSsl(options.tls === true ? null : options.tls)
    : credentials.createInsecure();
  const token = options.token;
  if (token) {
    const call = credentials.createFromMetadataGenerator((_params, done) => {
      const metadata = new Metadata();
      metadata.set("authorization", `Bearer ${token}`);
      done(null, metadata);
    });
    // grpc-js sends call credentials over TLS only; on plaintext use callMetadata() instead
    if (options.tls) creds = credentials.combineChannelCredentials(creds, call);
  }
  const connection = new ConnectionServiceClient(address, creds);
  // every client shares the first one's channel
  const shared = { channelOverride: connection.getChannel() };
  const gateway: Gateway = {
    connection,
    accounts: new AccountServiceClient(address, creds, shared),
    portfolio: new PortfolioServiceClient(address, creds, shared),
    marketData: new MarketDataServiceClient(address, creds, shared),
    orders: new OrderServiceClient(address, creds, shared),
    close: () => connection.close(),
  };
  return gateway;
}

/** Per-call metadata carrying a bearer token (for plaintext channels). */
export function callMetadata(token?: string): Metadata {
  const metadata = new Metadata();
  if (token) metadata.set("authorization", `Bearer ${token}`);
  return metadata;
}

/** An exact decimal for a request: `dec("150.25")`. */
export function dec(value: string | number | bigint): Decimal {
  return { value: String(value) };
}

export interface FieldViolation {
  field: string;
  description: string;
}

/** A failed call with the gateway's google.rpc.Status details decoded. */
export interface GatewayError {
  code: status;
  codeName: string;
  message: string;
  reason: string;
  domain: string;
  ibCode?: number;
  metadata: Record<string, string>;
  fieldViolations: FieldViolation[];
  retryDelaySeconds?: number;
}

const TYPE_PREFIX = "type.googleapis.com/";

/** Decode ErrorInfo, BadRequest and RetryInfo from the grpc-status-details-bin trailer. */
export function decodeError(error: ServiceError): GatewayError {
  const result: GatewayError = {
    code: error.code,
    codeName: status[error.code] ?? String(error.code),
    message: error.details,
    reason: "",
    domain: "",
    metadata: {},
    fieldViolations: [],
  };
  const [raw] = error.metadata?.get("grpc-status-details-bin") ?? [];
  if (!raw || typeof raw === "string") return result;
  const rich = Status.decode(raw);
  if (rich.message) result.message = rich.message;
  for (const detail of rich.details) {
    const type = detail.typeUrl.startsWith(TYPE_PREFIX)
      ? detail.typeUrl.slice(TYPE_PREFIX.length)
      : detail.typeUrl;
    if (type === "google.rpc.ErrorInfo") {
      const info = ErrorInfo.decode(detail.value);
      result.reason = info.reason;
      result.domain = info.domain;
      result.metadata = info.metadata;
      if (/^-?\d+$/.test(info.metadata["ib_code"] ?? "")) {
        result.ibCode = Number(info.metadata["ib_code"]);
      }
    } else if (type === "google.rpc.BadRequest") {
      result.fieldViolations = BadRequest.decode(detail.value).fieldViolations.map((v) => ({
        field: v.field,
        description: v.description,
      }));
    } else if (type === "google.rpc.RetryInfo") {
      const delay = RetryInfo.decode(detail.value).retryDelay;
      if (delay) result.retryDelaySeconds = Number(delay.seconds) + delay.nanos / 1e9;
    }
  }
  return result;
}

/** Promise form of a unary call: `await unary((cb) => gw.accounts.listAccounts({}, cb))`. */
export function unary<T>(
  start: (callback: (error: ServiceError | null, response: T) => void) => unknown,
): Promise<T> {
  return new Promise((resolve, reject) => {
    start((error, response) => (error ? reject(error) : resolve(response)));
  });
}
