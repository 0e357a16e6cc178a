import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import type { ProtoGrpcType } from "../generated/csi/csi.js";

/** proto/csi.proto, found from this module both in src/ (tests) and in dist/ (the build). */
export const csiProtoPath = fileURLToPath(new URL("../../proto/csi.proto", import.meta.url));

// The same options as the sidecar's client (src/layers/CsiGrpc.ts) and as `npm run gen:proto`:
// the generated handler types describe objects in exactly this shape.
export const loadCsiProto = (): ProtoGrpcType =>
  grpc.loadPackageDefinition(
    protoLoader.loadSync(csiProtoPath, {
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
    }),
  ) as unknown as ProtoGrpcType;
