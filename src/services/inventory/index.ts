import type { ProductEvent } from "../../../gen/agora/inventory/v1/inventory_pb.js";
import { InventoryService } from "../../../gen/agora/inventory/v1/inventory_pb.js";
import { openServiceDatabase, ping } from "../../platform/db.js";
import { EventLog } from "../../platform/event-log.js";
import type { ServiceModule } from "../../platform/service-module.js";
import { inventoryHandlers, productEventCodec } from "./inventory.service.js";
import { Migration20261121000000 } from "./migrations/Migration20261121000000.js";
import { ProductSchema, StockMovementSchema } from "./product.entity.js";
import { ProductRepository } from "./product.repository.js";

export const inventoryModule: ServiceModule = {
  name: "inventory",
  services: [InventoryService],
  adminMethods: ["CreateProduct", "UpdateProduct", "DeleteProduct", "AdjustStock"].map((m) => `${InventoryService.typeName}/${m}`),
  async start({ config, databaseUrl, log, pubsub, pageTokens }) {
    const orm = await openServiceDatabase({
      url: databaseUrl,
      schema: "inventory",
      entities: [ProductSchema, StockMovementSchema],
      migrations: [Migration20261121000000],
      poolSize: config.dbPoolSize,
      log,
    });
    const events = new EventLog<ProductEvent>(orm.em, "inventory", pubsub, productEventCodec, log, config.eventRetentionHours * 3_600_000);
    await events.start();
    const products = new ProductRepository(orm.em, events);
    return {
      register: (router) => router.service(InventoryService, inventoryHandlers(products, events, config.heartbeatIntervalMs, pageTokens)),
      ping: () => ping(orm),
      stop: async () => {
        events.stop();
        await orm.close();
      },
    };
  },
};
