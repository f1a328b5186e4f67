//! `shoppingcart/inventory`: one per item, holds `in_stock` and `reserved`.
//!
//! On `RequestItem` it reserves the quantity if enough is in stock and answers
//! the caller with `ItemAvailability` (RESERVED or UNAVAILABLE, with the stock
//! left). On `RestockItem` it adds to the stock and writes an
//! [`InventoryUpdate`] to `inventory-updates`. With a [`Supplier`] it is an
//! asynchronous function: a restock first awaits the supplier, and only what
//! it delivers is added.

use statefun_proto::shoppingcart::{ItemAvailability, RequestItem, RestockItem, item_availability::Status};
use statefun_sdk::{Address, BoxError, Context, EgressMessage, Message};

use crate::error::classify;
use crate::supplier::Supplier;
use crate::{CartError, INVENTORY_UPDATES_STREAM, InventoryUpdate, egress, in_stock, reserved};

/// Handles one message to an inventory.
pub(crate) fn handle(ctx: &mut Context, message: Message) -> Result<(), BoxError> {
    dispatch(ctx, message).map_err(classify)
}

/// Handles one message to an inventory whose restocks come from `supplier`.
pub(crate) async fn handle_with_supplier(
    supplier: Supplier,
    mut ctx: Context,
    message: Message,
) -> Result<Context, BoxError> {
    if !message.is_proto::<RestockItem>() {
        handle(&mut ctx, message)?;
        return Ok(ctx);
    }
    let order: RestockItem = message.as_proto()?;
    let address = ctx.self_address().clone();
    check_positive(&address, order.quantity).map_err(|e| classify(e.into()))?;
    let delivered = supplier.deliver(address.id(), order.quantity).await?;
    if delivered > 0 {
        restock(&mut ctx, RestockItem { quantity: delivered, ..order }).map_err(classify)?;
    }
    Ok(ctx)
}

fn dispatch(ctx: &mut Context, message: Message) -> Result<(), BoxError> {
    if message.is_proto::<RequestItem>() {
        request_item(ctx, message.as_proto()?)
    } else if message.is_proto::<RestockItem>() {
        restock(ctx, message.as_proto()?)
    } else {
        Err(CartError::UnexpectedMessage {
            address: ctx.self_address().clone(),
            typename: message.typename().to_owned(),
        }
        .into())
    }
}

fn request_item(ctx: &mut Context, request: RequestItem) -> Result<(), BoxError> {
    let address = ctx.self_address().clone();
    check_positive(&address, request.quantity)?;
    let caller = ctx.caller().cloned().ok_or_else(|| CartError::NoCaller { address: address.clone() })?;
    let stock = ctx.get(&in_stock())?.unwrap_or(0);
    let (status, remaining) = if stock >= request.quantity {
        let left = stock - request.quantity;
        let held = ctx.get(&reserved())?.unwrap_or(0);
        let held = held
            .checked_add(request.quantity)
            .ok_or(CartError::Overflow { address: address.clone(), what: "the reserved quantity" })?;
        ctx.set(&in_stock(), &left)?;
        ctx.set(&reserved(), &held)?;
        (Status::Reserved, left)
    } else {
        (Status::Unavailable, stock)
    };
    let answer = ItemAvailability {
        status: status as i32,
        item_id: address.id().to_owned(),
        quantity: request.quantity,
        request_id: request.request_id,
        remaining,
    };
    ctx.send(Message::proto(caller, &answer));
    Ok(())
}

fn restock(ctx: &mut Context, restock: RestockItem) -> Result<(), BoxError> {
    let address = ctx.self_address().clone();
    check_positive(&address, restock.quantity)?;
    let stock = ctx
        .get(&in_stock())?
        .unwrap_or(0)
        .checked_add(restock.quantity)
        .ok_or(CartError::Overflow { address: address.clone(), what: "the stock" })?;
    ctx.set(&in_stock(), &stock)?;
    let update = InventoryUpdate { item_id: address.id().to_owned(), restocked: restock.quantity, in_stock: stock };
    ctx.send_egress(EgressMessage::kinesis(
        egress(),
        INVENTORY_UPDATES_STREAM,
        address.id(),
        serde_json::to_vec(&update)?,
    ));
    Ok(())
}

fn check_positive(address: &Address, quantity: i32) -> Result<(), CartError> {
    if quantity <= 0 {
        return Err(CartError::NonPositiveQuantity { address: address.clone(), quantity });
    }
    Ok(())
}
