// `method_to_typeid = { get_item: ItemWrapper }`: the mapped method returns the generated
// proxies of `ItemWrapper`, async and blocking, with no annotation or turbofish; fallible
// methods too.

use manager::proxy::SharedProxies;

pub struct ItemWrapper {
    item: String,
}

#[manager::shared]
impl ItemWrapper {
    pub fn get_wrapped_item(&self) -> String {
        self.item.clone()
    }
}

pub struct Pair {
    item: String,
}

#[manager::shared(method_to_typeid = { get_item: ItemWrapper, try_item: crate::ItemWrapper })]
impl Pair {
    pub fn get_item(&self) -> ItemWrapper {
        ItemWrapper {
            item: self.item.clone(),
        }
    }

    pub fn try_item(&self, ok: bool) -> Result<ItemWrapper, String> {
        if ok {
            Ok(self.get_item())
        } else {
            Err("no item".into())
        }
    }
}

fn blocking(pair: &PairBlockingProxy) -> manager::Result<String> {
    let wrapper = pair.get_item()?;
    let _checked: Result<ItemWrapperBlockingProxy, String> = pair.try_item(true)?;
    wrapper.get_wrapped_item()
}

async fn asynchronous(pair: &PairProxy) -> manager::Result<String> {
    let wrapper: ItemWrapperProxy = pair.get_item().await?;
    wrapper.get_wrapped_item().await
}

fn main() {
    assert_eq!(<ItemWrapper as SharedProxies>::TYPEID, "ItemWrapper");
    let _ = (blocking, asynchronous);
}
