//! `shoppingcart/cart`: one per user, holds the items in the cart.
//!
//! On `AddToCart` it asks the item's inventory for the quantity; on the
//! inventory's `ItemAvailability` it adds reserved items to `items` and writes
//! a [`CartResult`] to `cart-results` either way.

use statefun_proto::shoppingcart::{AddToCart, ItemAvailability, RequestItem, item_availability};
use statefun_sdk::{BoxError, Context, EgressMessage, Message};

use crate::{CART_RESULTS_STREAM, CartError, CartResult, Status, egress, inventory_type, items};

/// Handles one message to a cart.
pub(crate) fn handle(ctx: &mut Context, message: Message) -> Result<(), BoxError> {
    dispatch(ctx, message).map_err(crate::error::classify)
}

fn dispatch(ctx: &mut Context, message: Message) -> Result<(), BoxError> {
    if message.is_proto::<AddToCart>() {
        add_to_cart(ctx, message.as_proto()?)
    } else if message.is_proto::<ItemAvailability>() {
        item_availability(ctx, message.as_proto()?)
    } else {
        Err(CartError::UnexpectedMessage {
            address: ctx.self_address().clone(),
            typename: message.typename().to_owned(),
        }
        .into())
    }
}

fn add_to_cart(ctx: &mut Context, add: AddToCart) -> Result<(), BoxError> {
    let address = ctx.self_address().clone();
    if add.quantity <= 0 {
        return Err(CartError::NonPositiveQuantity { address, quantity: add.quantity }.into());
    }
    if add.item_id.is_empty() {
        return Err(CartError::MissingItem { address }.into());
    }
    let request = RequestItem { quantity: add.quantity, request_id: add.request_id };
    ctx.send(Message::proto(inventory_type().address(add.item_id), &request));
    Ok(())
}

fn item_availability(ctx: &mut Context, availability: ItemAvailability) -> Result<(), BoxError> {
    let address = ctx.self_address().clone();
    let item_id = if !availability.item_id.is_empty() {
        availability.item_id.clone()
    } else {
        match ctx.caller() {
            Some(caller) if caller.function_type() == &inventory_type() => caller.id().to_owned(),
            _ => return Err(CartError::MissingItem { address }.into()),
        }
    };
    if availability.quantity <= 0 {
        return Err(CartError::NonPositiveQuantity { address, quantity: availability.quantity }.into());
    }
    let status = match item_availability::Status::try_from(availability.status) {
        Ok(item_availability::Status::Reserved) => Status::Reserved,
        Ok(item_availability::Status::Unavailable) => Status::Unavailable,
        Err(_) => {
            return Err(CartError::UnknownStatus { address, status: availability.status }.into());
        }
    };

    let mut cart = ctx.get(&items())?.unwrap_or_default();
    let mut in_cart = cart.get(&item_id).copied().unwrap_or(0);
    if status == Status::Reserved {
        in_cart = in_cart
            .checked_add(availability.quantity)
            .ok_or(CartError::Overflow { address: address.clone(), what: "the quantity in the cart" })?;
        cart.insert(item_id.clone(), in_cart);
        ctx.set(&items(), &cart)?;
    }

    let result = CartResult {
        request_id: availability.request_id,
        user_id: address.id().to_owned(),
        item_id,
        quantity: availability.quantity,
        status,
        in_cart,
        remaining: availability.remaining,
    };
    ctx.send_egress(EgressMessage::kinesis(egress(), CART_RESULTS_STREAM, address.id(), serde_json::to_vec(&result)?));
    Ok(())
}
