// Shared by the tests: stacks with a StatefunDeployment in them, a stand-in function artifact, and a
// resolver that turns the template's Fn::Join/Ref structures into the strings CloudFormation would
// make of them, so that the tests compare names and ARNs rather than token shapes.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { App, Stack, StackProps } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { StatefunDeployment, StatefunDeploymentProps } from '../lib';

/** The pseudo parameters resolved in the tests (a fixed dummy account; nothing reaches AWS). */
export const ACCOUNT = '123456789012';
export const REGION = 'eu-west-1';
export const PARTITION = 'aws';
export const URL_SUFFIX = 'amazonaws.com';

/**
 * Context of every test app: the CDK's CloudFormation validation (schema and lint rules, run
 * locally at synth) fails the synth instead of warning, so each template the tests look at is one
 * CloudFormation would take.
 */
export const TEST_CONTEXT = { '@aws-cdk/core:validateAgainstDefaultRules': true };

let artifactDir: string | undefined;
let scratch: string | undefined;

// Everything the tests write (the stand-in artifact, each app's cloud assembly) goes under one
// directory, removed when the test process ends.
function scratchDir(): string {
  if (scratch === undefined) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'statefun-cdk-test-'));
    process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
    scratch = dir;
  }
  return scratch;
}

/** A new app whose cloud assembly goes to the scratch directory, with the test context. */
export function testApp(context: Record<string, unknown> = {}): App {
  return new App({ outdir: fs.mkdtempSync(path.join(scratchDir(), 'cdk.out-')), context: { ...TEST_CONTEXT, ...context } });
}

/** A directory holding a stand-in `bootstrap`, as a function's code (the CDK zips it at synth). */
export function fakeArtifact(): string {
  if (artifactDir === undefined) {
    artifactDir = fs.mkdtempSync(path.join(scratchDir(), 'artifact-'));
    fs.writeFileSync(path.join(artifactDir, 'bootstrap'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
  }
  return artifactDir;
}

/** The shopping cart's props (as infra/terraform/examples/shopping-cart passes them), overridable. */
export function shoppingCartProps(overrides: Partial<StatefunDeploymentProps> = {}): StatefunDeploymentProps {
  return {
    name: 'shopping-cart',
    partitions: 4,
    ingressStreams: {
      'add-to-cart': { valueType: 'type.googleapis.com/shoppingcart.AddToCart', targets: ['shoppingcart/cart'] },
      restock: { valueType: 'type.googleapis.com/shoppingcart.RestockItem', targets: ['shoppingcart/inventory'] },
    },
    ingressId: 'shoppingcart/ingress',
    egressStreams: ['cart-results', 'inventory-updates'],
    egressIds: ['shoppingcart/kinesis'],
    functions: {
      functions: { code: fakeArtifact(), functionTypes: ['shoppingcart/*'], architecture: 'arm64', memoryMb: 256, timeoutSeconds: 30 },
    },
    image: '123456789012.dkr.ecr.eu-west-1.amazonaws.com/shopping-cart-runtime:v1',
    imageRepositoryArn: 'arn:aws:ecr:eu-west-1:123456789012:repository/shopping-cart-runtime',
    vpcId: 'vpc-0123456789abcdef0',
    subnetIds: ['subnet-00000000000000001', 'subnet-00000000000000002'],
    ...overrides,
  };
}

export interface Synthesized {
  readonly stack: Stack;
  readonly deployment: StatefunDeployment;
  readonly template: Template;
  /** The template as JSON. */
  readonly json: any;
}

/**
 * A stack with one deployment, synthesized. `env` defaults to none (an environment-agnostic stack,
 * whose account and region are pseudo parameters); pass { account, region } for a pinned one.
 */
export function synth(props: StatefunDeploymentProps, env?: StackProps['env']): Synthesized {
  const app = testApp();
  const stack = new Stack(app, 'Test', { env });
  const deployment = new StatefunDeployment(stack, 'Statefun', props);
  const template = Template.fromStack(stack);
  return { stack, deployment, template, json: template.toJSON() };
}

/**
 * What CloudFormation makes of a value: pseudo parameters become the test's account, region and
 * partition; Fn::Join is joined; a Ref or Fn::GetAtt of a resource becomes "<Ref Id>" or
 * "<GetAtt Id.Attr>" so that it shows in comparisons.
 */
export function resolve(value: any): any {
  if (Array.isArray(value)) return value.map(resolve);
  if (value === null || typeof value !== 'object') return value;
  const keys = Object.keys(value);
  if (keys.length === 1) {
    const [k] = keys;
    const v = value[k];
    if (k === 'Ref') {
      switch (v) {
        case 'AWS::AccountId':
          return ACCOUNT;
        case 'AWS::Region':
          return REGION;
        case 'AWS::Partition':
          return PARTITION;
        case 'AWS::URLSuffix':
          return URL_SUFFIX;
        default:
          return `<Ref ${v}>`;
      }
    }
    if (k === 'Fn::Join') {
      const [sep, parts] = v;
      return resolve(parts).map(String).join(sep);
    }
    if (k === 'Fn::GetAtt') {
      return `<GetAtt ${v[0]}.${v[1]}>`;
    }
  }
  const out: any = {};
  for (const k of keys) out[k] = resolve(value[k]);
  return out;
}

/** The resources of one type, by logical id. */
export function resourcesOf(json: any, type: string): Record<string, any> {
  const out: Record<string, any> = {};
  for (const [id, r] of Object.entries<any>(json.Resources ?? {})) {
    if (r.Type === type) out[id] = r;
  }
  return out;
}

/** The one resource of a type whose (resolved) property `prop` equals `value`. */
export function resourceWhere(json: any, type: string, prop: string, value: unknown): { id: string; resource: any } {
  const found = Object.entries(resourcesOf(json, type)).filter(([, r]) => resolve(r.Properties?.[prop]) === value);
  if (found.length !== 1) {
    throw new Error(`expected one ${type} with ${prop} = ${String(value)}, found ${found.length}`);
  }
  return { id: found[0][0], resource: found[0][1] };
}

/** A list whether CloudFormation gave one value or many. */
export function asList<T>(v: T | T[] | undefined): T[] {
  if (v === undefined) return [];
  return Array.isArray(v) ? v : [v];
}

/** The worker container's environment, resolved, as a record. */
export function workerEnvironment(json: any): Record<string, string> {
  const tds = Object.values(resourcesOf(json, 'AWS::ECS::TaskDefinition'));
  if (tds.length !== 1) throw new Error(`expected one task definition, found ${tds.length}`);
  const container = tds[0].Properties.ContainerDefinitions.find((c: any) => c.Name === 'worker');
  const env: Record<string, string> = {};
  for (const e of container.Environment) env[e.Name] = resolve(e.Value);
  return env;
}

/** Every policy statement in the template: inline role policies, policies, managed policies, bucket policies. */
export function allStatements(json: any): { where: string; statement: any }[] {
  const out: { where: string; statement: any }[] = [];
  for (const [id, r] of Object.entries<any>(json.Resources ?? {})) {
    const docs: any[] = [];
    if (r.Type === 'AWS::IAM::Role') docs.push(...(r.Properties.Policies ?? []).map((p: any) => p.PolicyDocument));
    if (r.Type === 'AWS::IAM::Policy' || r.Type === 'AWS::IAM::ManagedPolicy') docs.push(r.Properties.PolicyDocument);
    if (r.Type === 'AWS::S3::BucketPolicy') docs.push(r.Properties.PolicyDocument);
    for (const d of docs) for (const s of asList(d.Statement)) out.push({ where: id, statement: s });
  }
  return out;
}
