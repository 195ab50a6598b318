use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs,
};

use crate::support::{Harness, PROVIDER_KEY, ROUTER_KEY};

#[tokio::test]
async fn chat_goes_through_with_the_provider_key_and_upstream_model() {
    let harness = Harness::start().await;
    let request = CreateChatCompletionRequestArgs::default()
        .model("mock/gpt-4o-mini")
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("hello router")
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap();
    let response = harness.client().chat().create(request).await.unwrap();
    assert_eq!(
        response.choices[0].message.content.as_deref(),
        Some("mock reply: hello router")
    );
    assert_eq!(response.model, "gpt-4o-mini");

    let seen = harness.upstream.last_request().unwrap();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.json().unwrap()["model"], "gpt-4o-mini");
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {PROVIDER_KEY}").as_str())
    );
    for (_, value) in &seen.headers {
        assert!(
            !value
                .as_bytes()
                .windows(ROUTER_KEY.len())
                .any(|w| w == ROUTER_KEY.as_bytes())
        );
    }
}
