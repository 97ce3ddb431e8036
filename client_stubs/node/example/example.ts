// A tour of the gateway from Node: connection status, a quote stream, an order (its
// client_order_id makes a retry safe), and an error decoded from its google.rpc.Status.
//
//   node dist/example/example.js 127.0.0.1:50051 [client_order_id]
//
// Prints one JSON object per step (the test suite reads them).
import { ServiceError } from "@grpc/grpc-js";
import { callMetadata, connect, dec, decodeError, unary } from "../src";
import { GetBalanceResponse } from "../src/gen/ibgateway/v1/account";
import { ConnectionState } from "../src/gen/ibgateway/v1/common";
import { GetConnectionStatusResponse } from "../src/gen/ibgateway/v1/connection";
import { StreamQuotesRequest, SubscriptionState } from "../src/gen/ibgateway/v1/market_data";
import {
  OrderSide,
  OrderStatus,
  OrderType,
  PlaceOrderRequest,
  PlaceOrderResponse,
  TimeInForce,
} from "../src/gen/ibgateway/v1/orders";

const address = process.argv[2] ?? "127.0.0.1:50051";
const clientOrderId = process.argv[3] ?? `node-${Date.now()}`;
const out = (step: string, data: object): void => {
  console.log(JSON.stringify({ step, ...data }));
};

async function main(): Promise<void> {
  const token = process.env.IBGW_TOKEN;
  const gw = connect(address);
  const metadata = callMetadata(token); // plaintext: the token goes in each call's metadata
  const deadline = () => ({ deadline: new Date(Date.now() + 10_000) });
  try {
    const { status } = await unary<GetConnectionStatusResponse>((cb) =>
      gw.connection.getConnectionStatus({}, metadata, deadline(), cb),
    );
    out("status", {
      connected: status?.connected,
      state: ConnectionState[status?.state ?? 0],
      accounts: status?.accounts,
    });

    // three quotes from a stream, then cancel it
    const quotes: object[] = [];
    const stream = gw.marketData.streamQuotes(
      StreamQuotesRequest.fromPartial({ contracts: [{ symbol: "AAPL" }] }),
      metadata,
    );
    await new Promise<void>((resolve, reject) => {
      stream.on("data", (message) => {
        if (message.subscriptionStatus) {
          out("subscription", {
            symbol: message.subscriptionStatus.contract?.symbol,
            state: SubscriptionState[message.subscriptionStatus.state],
          });
        }
        for (const q of message.quotes?.quotes ?? []) {
          const { contract, bid, ask } = q;
          quotes.push({ symbol: contract?.symbol, conId: contract?.conId, bid: bid?.value, ask: ask?.value });
          if (quotes.length === 3) {
            stream.cancel();
            resolve();
          }
        }
      });
      stream.on("error", (error: ServiceError) => {
        if (error.code !== 1 /* CANCELLED: ours */) reject(error);
      });
    });
    out("quotes", { quotes });

    const placed = await unary<PlaceOrderResponse>((cb) =>
      gw.orders.placeOrder(
        PlaceOrderRequest.fromPartial({
          clientOrderId,
          contract: { symbol: "AAPL" },
          side: OrderSide.ORDER_SIDE_BUY,
          orderType: OrderType.ORDER_TYPE_LIMIT,
          quantity: dec("10"),
          limitPrice: dec("150.25"),
          timeInForce: TimeInForce.TIME_IN_FORCE_DAY,
        }),
        metadata,
        deadline(),
        cb,
      ),
    );
    const order = placed.order;
    out("order", {
      clientOrderId: order?.clientOrderId,
      orderId: order?.orderId,
      status: OrderStatus[order?.status ?? 0],
      limitPrice: order?.limitPrice?.value,
      replayed: placed.replayed,
    });

    try {
      await unary<GetBalanceResponse>((cb) =>
        gw.accounts.getBalance({ accountId: "U1234567" }, metadata, deadline(), cb),
      );
      out("error", { unexpected: "no error" });
    } catch (error) {
      const e = decodeError(error as ServiceError);
      out("error", {
        code: e.codeName,
        reason: e.reason,
        domain: e.domain,
        fieldViolations: e.fieldViolations,
        message: e.message,
      });
    }
  } finally {
    gw.close();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
