// Run by test/integration/async-context.test.ts in a process of its own: starts
// Agora, makes calls that write through every repository that once used
// MikroORM's transactional() or flush(), and prints whether Node's promise
// hooks got switched on (the first AsyncLocalStorage.run() does that for the
// rest of the process; see transaction() in src/platform/db.ts).
import { executionAsyncId } from "node:async_hooks";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ChatService, RoomVisibility } from "../../gen/agora/chat/v1/chat_pb.js";
import { IdentityService, Role } from "../../gen/agora/identity/v1/identity_pb.js";
import { Category, InventoryService } from "../../gen/agora/inventory/v1/inventory_pb.js";
import { MonitoringService } from "../../gen/agora/monitoring/v1/monitoring_pb.js";
import { ReservationService } from "../../gen/agora/reservation/v1/reservation_pb.js";
import { client, signUp, startTestServer } from "./harness.js";

/** With an init hook installed, each awaited promise runs under an async id of its own. */
async function promiseHooksOn(): Promise<boolean> {
  const outer = executionAsyncId();
  await null;
  const first = executionAsyncId();
  await null;
  return first !== outer || executionAsyncId() !== first;
}

const before = await promiseHooksOn();
const server = await startTestServer();
try {
  const admin = server.adminToken;
  const userToken = await signUp(server.url, "probe");
  const identity = client(IdentityService, server.url, "grpc", admin);
  const me = (await client(IdentityService, server.url, "grpc", userToken).getMe({})).user!;
  await identity.setUserRole({ userId: me.id, role: Role.ADMIN });
  await identity.setUserRole({ userId: me.id, role: Role.USER });

  const inventory = client(InventoryService, server.url, "grpc", admin);
  const { product } = await inventory.createProduct({
    product: { name: "Probe", category: Category.OFFICE, quantity: 5, unitPrice: { currencyCode: "EUR", units: 1n }, lowStockThreshold: 1 },
    requestId: "probe-1",
  });
  const { product: renamed } = await inventory.updateProduct({ id: product!.id, product: { name: "Probe 2" }, updateMask: { paths: ["name"] }, etag: product!.etag });
  await inventory.adjustStock({ productId: renamed!.id, delta: -1, reason: "probe", requestId: "probe-adjust" });

  const reservations = client(ReservationService, server.url, "grpc", admin);
  const { resource } = await reservations.createResource({ resource: { name: "Probe room", type: "room", capacity: 4, active: true } });
  await reservations.updateResource({ id: resource!.id, resource: { capacity: 6 }, updateMask: { paths: ["capacity"] }, etag: resource!.etag });
  const start = Math.ceil(Date.now() / 3_600_000 + 24) * 3_600_000;
  const asUser = client(ReservationService, server.url, "grpc", userToken);
  await asUser.createReservation({ resourceId: resource!.id, startTime: timestampFromMs(start), endTime: timestampFromMs(start + 3_600_000), partySize: 2, requestId: "probe-r" });
  const { notifications } = await asUser.listNotifications({});
  await asUser.markNotificationRead({ id: notifications[0]!.id });

  await client(ChatService, server.url, "grpc", userToken).createRoom({ name: "probe", visibility: RoomVisibility.PUBLIC });
  await client(MonitoringService, server.url, "grpc", userToken).reportMetricsBatch({
    host: "probe-host",
    samples: [{ metric: "probe.metric", value: 1, time: timestampFromMs(Date.now()) }],
  });
  console.log(JSON.stringify({ before, after: await promiseHooksOn() }));
} finally {
  await server.shutdown();
}
