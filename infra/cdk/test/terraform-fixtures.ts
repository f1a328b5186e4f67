// Text the Terraform module produces, captured from `terraform console` on
// infra/terraform/modules/statefun's expressions, for the tests to compare the CDK construct against.

// What infra/terraform/modules/statefun's local.module_yaml is for the shopping-cart example.
export const TERRAFORM_SHOPPING_CART_MODULE_YAML = (aliasArn: string) => `"kind": "statefun-aws.endpoints.v1/lambda"
"spec":
  "functionName": "${aliasArn}"
  "functions": "shoppingcart/*"
  "maxNumBatchRequests": 1000
  "transport":
    "call": "35s"
    "payload_max_bytes": 6291456
---
"kind": "io.statefun.kinesis.v1/ingress"
"spec":
  "awsRegion":
    "type": "default"
  "id": "shoppingcart/ingress"
  "startupPosition":
    "type": "earliest"
  "streams":
  - "stream": "add-to-cart"
    "targets":
    - "shoppingcart/cart"
    "valueType": "type.googleapis.com/shoppingcart.AddToCart"
  - "stream": "restock"
    "targets":
    - "shoppingcart/inventory"
    "valueType": "type.googleapis.com/shoppingcart.RestockItem"
---
"kind": "io.statefun.kinesis.v1/egress"
"spec":
  "awsRegion":
    "type": "default"
  "id": "shoppingcart/kinesis"
`;
