// The module.yaml generator against text Terraform's yamlencode produced for the same documents
// (`terraform console` on the shopping cart's documents), so the CDK and the Terraform module hand
// the runtime the same file.

import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { moduleYaml, yamlEncode } from '../lib';
import { TERRAFORM_SHOPPING_CART_MODULE_YAML } from './terraform-fixtures';

const ALIAS_ARN = 'arn:aws:lambda:us-east-1:123456789012:function:shopping-cart-functions:live';


const shoppingCart = {
  functions: { functions: { functionTypes: ['shoppingcart/*'], aliasArn: ALIAS_ARN, maxBatch: 1000, timeoutSeconds: 30 } },
  // Given out of order: Terraform iterates the map by key.
  ingressStreams: {
    restock: { valueType: 'type.googleapis.com/shoppingcart.RestockItem', targets: ['shoppingcart/inventory'] },
    'add-to-cart': { valueType: 'type.googleapis.com/shoppingcart.AddToCart', targets: ['shoppingcart/cart'] },
  },
  ingressId: 'shoppingcart/ingress',
  ingressStartupPosition: 'earliest',
  egressIds: ['shoppingcart/kinesis'],
};

test('the shopping cart module.yaml is byte for byte what Terraform generates', () => {
  assert.equal(moduleYaml(shoppingCart), TERRAFORM_SHOPPING_CART_MODULE_YAML(ALIAS_ARN));
});

test('yamlEncode lays out nested lists and maps as yamlencode does', () => {
  // terraform console: yamlencode({a = [[1,2],[3]], b = [{x = [{y = 1}]}], c = "tab\there"})
  assert.equal(
    yamlEncode({ a: [[1, 2], [3]], b: [{ x: [{ y: 1 }] }], c: 'tab\there' }),
    '"a":\n- - 1\n  - 2\n- - 3\n"b":\n- "x":\n  - "y": 1\n"c": "tab\\there"\n',
  );
  // yamlencode({a = "x:y", b = "with \"quote\" and \\ back", c = "", e = true, f = 1.5, g = [], h = {}, i = "123"})
  assert.equal(
    yamlEncode({ a: 'x:y', b: 'with "quote" and \\ back', c: '', e: true, f: 1.5, g: [], h: {}, i: '123' }),
    '"a": "x:y"\n"b": "with \\"quote\\" and \\\\ back"\n"c": ""\n"e": true\n"f": 1.5\n"g": []\n"h": {}\n"i": "123"\n',
  );
});

test('documents: one endpoint per function-type pattern in key order, the ingress, the egresses, the extra documents', () => {
  const text = moduleYaml({
    functions: {
      zeta: { functionTypes: ['z/one', 'z/two'], aliasArn: 'arn:z', maxBatch: 10, timeoutSeconds: 60 },
      alpha: { functionTypes: ['a/*'], aliasArn: 'arn:a', maxBatch: 1000, timeoutSeconds: 30 },
    },
    ingressStreams: {},
    ingressId: 'statefun/ingress',
    ingressStartupPosition: 'latest',
    egressIds: ['e/one', 'e/two'],
    extraDocuments: '---\nkind: io.statefun.endpoints.v2/http\nspec:\n  functions: h/*\n  urlPathTemplate: https://h.example/{function.name}\n\n',
  });
  const docs = parseAllDocuments(text).map((d) => {
    assert.deepEqual(d.errors, []);
    return d.toJS();
  });
  assert.deepEqual(
    docs.map((d) => [d.kind, d.spec.functions ?? d.spec.id]),
    [
      ['statefun-aws.endpoints.v1/lambda', 'a/*'],
      ['statefun-aws.endpoints.v1/lambda', 'z/one'],
      ['statefun-aws.endpoints.v1/lambda', 'z/two'],
      ['io.statefun.kinesis.v1/egress', 'e/one'],
      ['io.statefun.kinesis.v1/egress', 'e/two'],
      ['io.statefun.endpoints.v2/http', 'h/*'],
    ],
  );
  // No ingress document without ingress streams; the call timeout is the function's plus 5 s.
  assert.deepEqual(docs[1].spec.transport, { call: '65s', payload_max_bytes: 6291456 });
  assert.ok(text.endsWith('urlPathTemplate: https://h.example/{function.name}\n'));
});
