// The construct against the Terraform module's own source (infra/terraform/modules): the variables
// and their defaults, the IAM actions of each statement, the commit-failure phrases, the worker's
// environment variables and the module.yaml constants. A change on the Terraform side that the CDK
// twin does not follow fails here.

import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { COMMIT_FAILURE_PHRASES, DEPLOYMENT_DEFAULTS, FUNCTION_DEFAULTS } from '../lib';
import { asList, resolve, resourceWhere, resourcesOf, shoppingCartProps, synth, workerEnvironment } from './helpers';

// dist/test -> infra/cdk -> infra/terraform
const TERRAFORM = path.resolve(__dirname, '..', '..', '..', 'terraform', 'modules');
const present = fs.existsSync(path.join(TERRAFORM, 'statefun', 'variables.tf'));
const tf = (file: string) => fs.readFileSync(path.join(TERRAFORM, file), 'utf8');

// Terraform variables the construct takes without a default: required, or a name derived when unset.
const WITHOUT_DEFAULT = new Set([
  'name', 'partitions', 'image', 'subnet_ids', 'vpc_id', 'image_repository_arn', 'bucket_name',
  'dead_letter_stream_name', 'dead_letter_expiration_days',
]);

const camel = (snake: string) => snake.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());

// A default as HCL writes the simple ones: a string, number, bool, null, [] or {}.
function hclValue(text: string): unknown {
  const t = text.trim();
  if (t === 'null') return null;
  if (t === 'true' || t === 'false') return t === 'true';
  if (t === '[]') return [];
  if (t === '{}') return {};
  if (/^-?[0-9]+(\.[0-9]+)?$/.test(t)) return Number(t);
  if (/^"([^"\\]|\\.)*"$/.test(t)) return JSON.parse(t);
  throw new Error(`not a simple HCL value: ${t}`);
}

/** variable name => its default (undefined when it has none), from a variables.tf. */
function variables(text: string): Map<string, unknown> {
  const out = new Map<string, unknown>();
  const blocks = text.split(/^variable "/m).slice(1);
  for (const block of blocks) {
    const name = block.slice(0, block.indexOf('"'));
    // The block's own default: at two spaces of indentation (an object type's optional()s are deeper).
    const m = /^ {2}default\s*=\s*(.*)$/m.exec(block);
    out.set(name, m ? hclValue(m[1]) : undefined);
  }
  return out;
}

/** statement sid => its actions, from the aws_iam_policy_document statements of a .tf file. */
function statementActions(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const re = /sid\s*=\s*"(\w+)"\s*\n\s*actions\s*=\s*\[([^\]]*)\]/g;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    out.set(m[1], [...m[2].matchAll(/"([^"]+)"/g)].map((x) => x[1]));
  }
  return out;
}

describe('the Terraform module and the construct agree', { skip: !present && 'infra/terraform is not beside infra/cdk' }, () => {
  test("every variable of modules/statefun is a prop, with the variable's default", () => {
    const vars = variables(tf('statefun/variables.tf'));
    assert.ok(vars.size > 40, `read ${vars.size} variables`);
    const defaults: Record<string, unknown> = DEPLOYMENT_DEFAULTS;
    for (const [name, dflt] of vars) {
      if (WITHOUT_DEFAULT.has(name)) {
        assert.ok(dflt === undefined || dflt === null, `${name}: Terraform now defaults it to ${JSON.stringify(dflt)}`);
        assert.ok(!(camel(name) in defaults), `${name} has no default in Terraform`);
        continue;
      }
      assert.ok(camel(name) in defaults, `Terraform variable ${name} has no prop default ${camel(name)}`);
      assert.deepEqual(defaults[camel(name)], dflt, `default of ${name}`);
    }
    for (const prop of Object.keys(defaults)) {
      assert.ok([...vars.keys()].some((v) => camel(v) === prop), `prop ${prop} is not a Terraform variable`);
    }
  });

  test("the storage module's defaults the deployment module leaves alone are the construct's fixed choices", () => {
    const vars = variables(tf('statefun-storage/variables.tf'));
    const { json } = synth(shoppingCartProps());
    const [bucket] = Object.values(resourcesOf(json, 'AWS::S3::Bucket'));
    const rules = bucket.Properties.LifecycleConfiguration.Rules;
    assert.equal(vars.get('lifecycle_rules'), true);
    assert.equal(rules[0].AbortIncompleteMultipartUpload.DaysAfterInitiation, vars.get('abort_incomplete_multipart_days'));
    // The deployment module passes neither name, so the storage module's derived names hold.
    assert.equal(vars.get('table_name'), null);
    assert.equal(vars.get('exchange_stream_name'), null);
    assert.match(tf('statefun-storage/main.tf'), /"\$\{var\.name\}-exchange"[\s\S]*"\$\{var\.name\}-dead-letters"[\s\S]*"\$\{var\.name\}-partitions"/);
  });

  test("a function's settings default as the optional()s of the functions variable", () => {
    const text = tf('statefun/variables.tf');
    const block = text.slice(text.indexOf('variable "functions"'), text.indexOf('variable "function_alias"'));
    const optionals = [...block.matchAll(/^\s*(\w+)\s*=\s*optional\([^,]+,\s*(.+)\)\s*$/gm)];
    assert.ok(optionals.length >= 7);
    const defaults: Record<string, unknown> = FUNCTION_DEFAULTS;
    for (const [, name, value] of optionals) {
      assert.deepEqual(defaults[camel(name)], hclValue(value), `default of functions.${name}`);
    }
    assert.match(block, /artifact\s*=\s*string/);
    assert.match(tf('statefun/functions.tf'), /handler\s*=\s*"bootstrap"[\s\S]*runtime\s*=\s*"provided\.al2023"/);
  });

  test('each IAM statement allows the actions iam.tf and functions.tf allow', () => {
    const want = new Map([...statementActions(tf('statefun/iam.tf')), ...statementActions(tf('statefun/functions.tf'))]);
    assert.deepEqual([...want.keys()].sort(), [
      'CheckpointObjects', 'InvokeFunctions', 'LeasesAndCommits', 'ListCheckpoints', 'OwnLogs', 'PullImage',
      'ReadInputStreams', 'RegistryLogin', 'WorkerLogs', 'WriteOutputStreams',
    ]);
    const { json } = synth(shoppingCartProps());
    const got = new Map<string, string[]>();
    for (const role of ['shopping-cart-worker-task', 'shopping-cart-worker-execution', 'shopping-cart-functions-fn']) {
      const r = resourceWhere(json, 'AWS::IAM::Role', 'RoleName', role).resource;
      for (const p of r.Properties.Policies) {
        for (const s of asList<any>(p.PolicyDocument.Statement)) got.set(s.Sid, asList<string>(s.Action));
      }
    }
    assert.deepEqual(Object.fromEntries(got), Object.fromEntries(want));
  });

  test("the commit-failure phrases are alarms.tf's", () => {
    const text = tf('statefun/alarms.tf');
    const list = /commit_failure_phrases\s*=\s*\[([^\]]*)\]/.exec(text);
    assert.ok(list);
    assert.deepEqual(COMMIT_FAILURE_PHRASES, [...list[1].matchAll(/"([^"]+)"/g)].map((m) => m[1]));
  });

  test("the worker's environment has the variables worker.tf and the storage module set", () => {
    const worker = tf('statefun/worker.tf');
    const locals = worker.slice(worker.indexOf('worker_environment = merge('), worker.indexOf('var.worker_environment'));
    const storage = tf('statefun-storage/outputs.tf');
    const storageEnv = storage.slice(storage.indexOf('output "statefun_environment"'));
    const names = new Set([
      ...[...locals.matchAll(/^\s*([A-Z][A-Z_]+)\s*=/gm)].map((m) => m[1]),
      ...[...storageEnv.matchAll(/([A-Z][A-Z_]+)\s*=/g)].map((m) => m[1]),
    ]);
    assert.ok(names.has('STATEFUN_STUCK_AFTER') && names.has('STATEFUN_DEAD_LETTER_STREAM'));
    const { json } = synth(shoppingCartProps());
    assert.deepEqual(Object.keys(workerEnvironment(json)).sort(), [...names].sort());
  });

  test("module.yaml's transport settings are main.tf's", () => {
    const main = tf('statefun/main.tf');
    const call = /call\s*=\s*"\$\{f\.timeout_seconds \+ (\d+)\}s"/.exec(main);
    const payload = /payload_max_bytes\s*=\s*(\d+)/.exec(main);
    assert.ok(call && payload);
    const { json } = synth(shoppingCartProps({ functions: { f: { code: shoppingCartProps().functions!.functions.code, functionTypes: ['a/*'], timeoutSeconds: 12 } } }));
    const yaml = workerEnvironment(json).STATEFUN_MODULE_YAML;
    assert.match(yaml, new RegExp(`"call": "${12 + Number(call[1])}s"`));
    assert.match(yaml, new RegExp(`"payload_max_bytes": ${payload[1]}\\n`));
    assert.equal(typeof resolve(yaml), 'string');
  });
});
