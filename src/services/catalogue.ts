import type { ServiceName } from "../config.js";
import type { ServiceModule } from "../platform/service-module.js";
import { chatModule } from "./chat/index.js";
import { filesModule } from "./files/index.js";
import { identityModule } from "./identity/index.js";
import { inventoryModule } from "./inventory/index.js";
import { monitoringModule } from "./monitoring/index.js";
import { reservationModule } from "./reservation/index.js";

/**
 * Every service of this build, by the name `SERVICES` and the gateway's clusters use. The server
 * starts the chosen ones from here and the Envoy configuration is generated from here (routes,
 * retry policies, public methods), so a new service is added in this one place (and its name in
 * config.ts, which the type below checks).
 */
export const SERVICE_MODULES: Record<ServiceName, ServiceModule> = {
  identity: identityModule,
  inventory: inventoryModule,
  reservation: reservationModule,
  chat: chatModule,
  files: filesModule,
  monitoring: monitoringModule,
};
